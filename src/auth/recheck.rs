//! Asking a long call's credential again while it runs.
//!
//! A `WatchRequest` stream may stay open for days, longer than the token
//! or JWT that opened it is good for. The auth layer keeps what the call
//! proved itself with ([`Recheck`]) and the stream asks again, before
//! each read and each event it sends, until the answer changes:
//!
//! - cheaply while nothing could have changed it: the authenticator's
//!   settings are those the call was let in under (its
//!   [`Authenticator::generation`]) and a JWT's `exp` has not passed
//!   (past it, while the verifier's leeway still holds it, once a second);
//! - otherwise by identifying the caller again, as a new call would be: a
//!   token taken out of the auth file or an expired JWT ends the stream
//!   `UNAUTHENTICATED`, a principal whose roles no longer allow the method
//!   `PERMISSION_DENIED`. A static token is kept only as the digest the
//!   auth file lists it by, not as itself, for the call's life.
//!
//! A client certificate's `notAfter` counts as a JWT's `exp`: once it
//! passes, the caller is identified again, which refuses an expired
//! certificate (`UNAUTHENTICATED`: a new connection needs a valid one).
//!
//! What the stream may show was decided with the caller's name and whether
//! it sees every request (auditors and operators) or only its own: so the
//! same principal with other roles that still allow the method goes on,
//! unless it no longer sees every request (`PERMISSION_DENIED`: its own
//! requests it may watch again), and a credential that now proves another
//! principal ends it (`UNAUTHENTICATED`). A JWKS URL that cannot be
//! fetched does not end anything: the keys in use are kept until a fetch
//! succeeds (see [`Authenticator::reload`]).

use std::sync::Arc;

use base64::Engine;
use tonic::Status;

use super::Caller;
use super::config::token_digest;
use super::identify::{Authenticator, Credentials, bearer};
use super::policy::{self, Allowed, Decision};
use crate::tls::server::{TlsConnectInfo, certificate_facts};

/// What a long call proved itself with, kept with it (in the request's
/// extensions, for the methods [`policy::rechecked`] names) so that it
/// can ask again while it runs (see the module documentation).
#[derive(Clone)]
pub struct Recheck {
    auth: Arc<Authenticator>,
    /// The authenticator's settings it was last let in under.
    generation: u64,
    authorization: Option<Kept>,
    tls: Option<TlsConnectInfo>,
    /// The first second (Unix) the credential no longer holds: a bearer
    /// JWT's `exp`, read from the token the layer verified, or the second
    /// after the `notAfter` of a client certificate that is the credential
    /// (no `authorization` header). From then on the caller is identified
    /// again.
    expires: Option<i64>,
    allowed: Allowed,
    caller: Option<Caller>,
}

/// The `authorization` header as a long call keeps it: a static token
/// only as its digest, which is all that asking again needs, so the token
/// itself is not held for the call's life (days, for a watch); anything
/// else (a JWT, verified again with the keys then in use) as sent.
#[derive(Clone)]
enum Kept {
    Header(String),
    StaticToken { digest: String },
}

impl Recheck {
    /// What the auth layer let in: `caller`, proved by `credentials` (the
    /// `authorization` header and the connection's TLS) under the
    /// authenticator's settings of `generation`, to a method `allowed`.
    pub fn new(
        auth: Arc<Authenticator>,
        generation: u64,
        credentials: (Option<String>, Option<TlsConnectInfo>),
        allowed: Allowed,
        caller: Option<Caller>,
    ) -> Self {
        let (authorization, tls) = credentials;
        let expires = match (&authorization, &tls) {
            (Some(header), _) => jwt_expiry(header),
            (None, Some(tls)) => tls
                .peer_certificates
                .as_ref()
                .and_then(|chain| chain.first())
                .and_then(|leaf| certificate_facts(leaf).not_after)
                .map(|not_after| not_after + 1),
            (None, None) => None,
        };
        let authorization = authorization.map(|header| {
            let digest = bearer(&header).map(token_digest);
            match digest {
                Some(digest) if auth.identify_token_digest(&digest).is_ok() => {
                    Kept::StaticToken { digest }
                }
                _ => Kept::Header(header),
            }
        });
        Self {
            auth,
            generation,
            authorization,
            tls,
            expires,
            allowed,
            caller,
        }
    }

    /// `Ok` while the credential still proves the caller the call was let
    /// in for, allowed to make it; otherwise the status to end the call
    /// with (see the module documentation).
    pub async fn still_allowed(&mut self) -> Result<(), Status> {
        let generation = self.auth.generation();
        let now = chrono::Utc::now().timestamp();
        let expired = self.expires.is_some_and(|exp| now >= exp);
        if generation == self.generation && !expired {
            return Ok(());
        }
        let caller = match &self.authorization {
            Some(Kept::StaticToken { digest }) => Some(self.auth.identify_token_digest(digest)?),
            Some(Kept::Header(header)) => self.identify(Some(header)).await?,
            None => self.identify(None).await?,
        };
        match policy::decide(self.allowed, caller.as_ref(), self.auth.is_open()) {
            Decision::Allow => {}
            Decision::Unauthenticated(why) => return Err(Status::unauthenticated(why)),
            Decision::Denied(why) => return Err(Status::permission_denied(why)),
        }
        let caller = caller.map(|c| policy::acting(self.allowed, c));
        match (&self.caller, &caller) {
            (Some(Caller::Principal(was)), Some(Caller::Principal(is))) if was.name != is.name => {
                Err(Status::unauthenticated(
                    "the credential now proves another principal: watch again",
                ))
            }
            (Some(was), Some(is)) if was.sees_all_requests() && !is.sees_all_requests() => {
                Err(Status::permission_denied(
                    "the caller's roles no longer let it see every request: watch again",
                ))
            }
            _ => {
                self.generation = generation;
                if expired {
                    // Past `exp` a JWT still holds for the verifier's
                    // leeway: asked again a second on, not at every event.
                    self.expires = Some(now + 1);
                }
                Ok(())
            }
        }
    }

    /// The caller `authorization` and the call's TLS prove now.
    async fn identify(&self, authorization: Option<&str>) -> Result<Option<Caller>, Status> {
        let credentials = Credentials {
            authorization,
            tls: self.tls.as_ref(),
        };
        self.auth.identify(credentials).await
    }
}

/// The `exp` claim of a bearer token that is a JWT (not verified here:
/// the layer verified the token, and this only says when to again).
fn jwt_expiry(header: &str) -> Option<i64> {
    let token = super::identify::bearer(header)?;
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    // A NumericDate may have a fraction (RFC 7519), which the verifier
    // takes: the second it falls in counts.
    let exp = serde_json::from_slice::<serde_json::Value>(&json)
        .ok()?
        .get("exp")?
        .as_f64()?;
    Some(exp.floor() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    /// A static token is kept as its digest, not as itself, and asked
    /// again by it: refused once it is taken out of the auth file. Any
    /// other header is kept as sent.
    #[tokio::test]
    async fn a_static_token_is_kept_as_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/dsr.db", dir.path().display());
        let store = Store::connect(&url, &StoreOptions::default())
            .await
            .unwrap();
        let file = dir.path().join("auth.yaml");
        let listing = |token: &str| {
            let digest = token_digest(token);
            format!("tokens:\n  - principal: watcher\n    sha256: {digest}\n    roles: [auditor]\n")
        };
        std::fs::write(&file, listing("a-static-token")).unwrap();
        let auth = Arc::new(
            Authenticator::load(store, Some(file.clone()))
                .await
                .unwrap(),
        );
        let allowed = policy::allowed("/dsr.v1.RequestService/WatchRequest").unwrap();
        let header = "Bearer a-static-token";
        let caller = auth
            .identify(Credentials {
                authorization: Some(header),
                tls: None,
            })
            .await
            .unwrap();
        let kept = |header: &str| {
            let credentials = (Some(header.to_string()), None);
            Recheck::new(
                auth.clone(),
                auth.generation(),
                credentials,
                allowed,
                caller.clone(),
            )
        };
        let mut recheck = kept(header);
        assert!(matches!(
            &recheck.authorization,
            Some(Kept::StaticToken { digest }) if *digest == token_digest("a-static-token")
        ));
        assert!(matches!(
            kept("Bearer a.jwt.shaped").authorization,
            Some(Kept::Header(h)) if h == "Bearer a.jwt.shaped"
        ));
        assert!(recheck.still_allowed().await.is_ok());

        std::fs::write(&file, listing("another-token")).unwrap();
        assert!(auth.reload().await.unwrap(), "the file changed");
        let refused = recheck.still_allowed().await.unwrap_err();
        assert_eq!(
            (refused.code(), refused.message()),
            (tonic::Code::Unauthenticated, "unknown token")
        );
    }

    #[test]
    fn a_jwt_says_when_it_expires_and_a_static_token_does_not() {
        let b64 = |s: &str| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
        };
        let jwt = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"ES256"}"#),
            b64(r#"{"exp":1767225600}"#)
        );
        assert_eq!(jwt_expiry(&format!("Bearer {jwt}")), Some(1_767_225_600));
        let fractional = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"ES256"}"#),
            b64(r#"{"exp":1767225600.5}"#)
        );
        assert_eq!(
            jwt_expiry(&format!("Bearer {fractional}")),
            Some(1_767_225_600)
        );
        assert_eq!(jwt_expiry("Bearer a-static-token"), None);
        assert_eq!(jwt_expiry("Bearer a.b.c"), None);
    }
}
