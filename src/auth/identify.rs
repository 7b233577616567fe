//! Finding the caller of one call from its credentials (see the module
//! documentation of [`super`] for the order they are tried in), against
//! the auth file as last read. The file, and a JWKS file, are read again
//! when they change; a JWKS URL is fetched every `jwt.refresh`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::Caller;
use super::config::{AuthConfig, CertMatch, JwksSource};
use super::jwt::Jwks;
use crate::store::Store;
use crate::tls::server::{TlsConnectInfo, certificate_facts};

/// The credentials a call may carry.
pub struct Credentials<'a> {
    /// The `authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The connection's TLS, if any.
    pub tls: Option<&'a TlsConnectInfo>,
}

/// The auth file as last read, and its JWKS.
struct State {
    config: AuthConfig,
    jwks: Option<Arc<Jwks>>,
    /// Digest of the auth file and of a JWKS file, to tell a change.
    digest: Vec<u8>,
    /// When a JWKS URL was last fetched.
    fetched: Instant,
}

/// Identifies callers.
pub struct Authenticator {
    store: Store,
    file: Option<PathBuf>,
    state: RwLock<Arc<State>>,
    /// Counts the changes to what credentials prove (the file read again,
    /// the JWKS fetched again), so that a long call's [`Recheck`] asks
    /// again only after one.
    ///
    /// [`Recheck`]: super::recheck::Recheck
    generation: AtomicU64,
}

impl Authenticator {
    /// Reads the auth file (`None`: the server authenticates no one but
    /// processors) and its JWKS.
    pub async fn load(store: Store, file: Option<PathBuf>) -> anyhow::Result<Self> {
        let state = read(file.as_ref(), None).await?;
        Ok(Self {
            store,
            file,
            state: RwLock::new(Arc::new(state)),
            generation: AtomicU64::new(0),
        })
    }

    /// How many times what credentials prove may have changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether the server authenticates no one but processors: it was
    /// started without an auth file. With one, it never opens up, not even
    /// when the file is emptied while it runs (no principal can call then).
    pub fn is_open(&self) -> bool {
        self.file.is_none()
    }

    fn current(&self) -> Arc<State> {
        self.state.read().expect("auth state lock").clone()
    }

    /// Reads the auth file and a JWKS file again when they changed, and
    /// fetches a JWKS URL when it is due: into the set in use, which keeps
    /// its keys when the identity provider cannot be reached. Returns
    /// whether anything may have changed.
    pub async fn reload(&self) -> anyhow::Result<bool> {
        let state = self.current();
        let due = state.config.jwt.as_ref().is_some_and(|j| {
            matches!(j.jwks, JwksSource::Url(_)) && state.fetched.elapsed() >= j.refresh
        });
        if digest(self.file.as_ref(), &state.config)? != state.digest {
            let fresh = read(self.file.as_ref(), Some(&state)).await?;
            *self.state.write().expect("auth state lock") = Arc::new(fresh);
        } else if let (true, Some(jwks)) = (due, &state.jwks) {
            // Due again at the next refresh whether or not this one works.
            *self.state.write().expect("auth state lock") = Arc::new(State {
                config: state.config.clone(),
                jwks: Some(jwks.clone()),
                digest: state.digest.clone(),
                fetched: Instant::now(),
            });
            jwks.refresh().await?;
        } else {
            return Ok(false);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// Reloads every `every` until `stop`, logging what it does.
    pub async fn reloader(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.reload().await {
                Ok(true) => tracing::info!("authentication settings read again"),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = %format!("{e:#}"),
                    "cannot read the authentication settings again; keeping the ones in use"
                ),
            }
        }
    }

    /// The caller `credentials` prove: `Ok(None)` when they carry none,
    /// `UNAUTHENTICATED` when they are not valid, `UNAVAILABLE` when a
    /// processor's token cannot be looked up.
    pub async fn identify(&self, credentials: Credentials<'_>) -> Result<Option<Caller>, Status> {
        let state = self.current();
        if let Some(header) = credentials.authorization {
            let token = bearer(header).ok_or_else(|| {
                Status::unauthenticated("the authorization header must be `Bearer <token>`")
            })?;
            if token.starts_with("dsrcb_") {
                return match self.store.authenticate(token).await {
                    Ok(Some(processor)) => Ok(Some(Caller::Processor(processor))),
                    Ok(None) => Err(Status::unauthenticated("unknown callback token")),
                    Err(e) if e.is_transient() => Err(Status::unavailable(
                        "the database is unavailable; retry later",
                    )),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot look a callback token up");
                        Err(Status::internal("internal error"))
                    }
                };
            }
            if let Some(principal) = state.config.token(token) {
                return Ok(Some(Caller::Principal(principal.clone())));
            }
            if let (Some(config), Some(jwks)) = (&state.config.jwt, &state.jwks)
                && token.split('.').count() == 3
            {
                return jwks
                    .verify(token, config)
                    .await
                    .map(|p| Some(Caller::Principal(p)))
                    .map_err(Status::unauthenticated);
            }
            return Err(Status::unauthenticated("unknown token"));
        }
        if let Some(leaf) = credentials
            .tls
            .and_then(|t| t.peer_certificates.as_ref())
            .and_then(|chain| chain.first())
        {
            // The handshake checked the validity period once; a
            // connection may outlive it, and no call is taken after it.
            let facts = certificate_facts(leaf);
            if facts
                .not_after
                .is_some_and(|t| chrono::Utc::now().timestamp() > t)
            {
                return Err(Status::unauthenticated(CERTIFICATE_EXPIRED));
            }
            let found = state.config.certificates.iter().find(|(m, _)| match m {
                CertMatch::CommonName(cn) => facts.common_name.as_ref() == Some(cn),
                CertMatch::San(san) => facts.sans.contains(san),
            });
            return match found {
                Some((_, principal)) => Ok(Some(Caller::Principal(principal.clone()))),
                None => Err(Status::unauthenticated(
                    "the client certificate names no principal of this server",
                )),
            };
        }
        if self.is_open() {
            return Ok(Some(Caller::Anonymous));
        }
        Ok(None)
    }

    /// The principal a static token names in the auth file as last read,
    /// given by its digest ([`super::config::token_digest`]): what a long
    /// call opened with a static token keeps instead of the token.
    pub fn identify_token_digest(&self, digest: &str) -> Result<Caller, Status> {
        match self.current().config.token_by_digest(digest) {
            Some(principal) => Ok(Caller::Principal(principal.clone())),
            None => Err(Status::unauthenticated("unknown token")),
        }
    }
}

/// Why a call on a connection whose client certificate has expired since
/// its handshake is refused.
pub const CERTIFICATE_EXPIRED: &str =
    "the client certificate has expired: connect again with a valid one";

/// The token of `Bearer <token>`, the scheme in any case (RFC 7235).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Reads the auth file and its JWKS: the key set of `previous` when it
/// names the same JWKS URL (fetching nothing), otherwise a new one.
async fn read(file: Option<&PathBuf>, previous: Option<&State>) -> anyhow::Result<State> {
    let config = match file {
        Some(path) => AuthConfig::load(path)?,
        None => AuthConfig::default(),
    };
    // The same JWKS URL keeps the set in use and its refresh times: a
    // change elsewhere in the file fetches nothing, so an identity
    // provider away at that moment takes no keys away.
    let kept = previous.and_then(|p| match (&p.config.jwt, &config.jwt, &p.jwks) {
        (Some(was), Some(is), Some(jwks))
            if was.jwks == is.jwks && matches!(is.jwks, JwksSource::Url(_)) =>
        {
            Some((jwks.clone(), p.fetched))
        }
        _ => None,
    });
    let (jwks, fetched) = match (kept, &config.jwt) {
        (Some((jwks, fetched)), _) => (Some(jwks), fetched),
        (None, Some(j)) => (
            Some(Arc::new(Jwks::load(j.jwks.clone()).await?)),
            Instant::now(),
        ),
        (None, None) => (None, Instant::now()),
    };
    Ok(State {
        digest: digest(file, &config)?,
        config,
        jwks,
        fetched,
    })
}

/// Digest of the auth file and of the JWKS file it names.
fn digest(file: Option<&PathBuf>, config: &AuthConfig) -> anyhow::Result<Vec<u8>> {
    let mut hash = Sha256::new();
    if let Some(path) = file {
        hash.update(
            std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("cannot read the auth file {}: {e}", path.display())
            })?,
        );
    }
    if let Some(JwksSource::File(path)) = config.jwt.as_ref().map(|j| &j.jwks) {
        hash.update([0]);
        hash.update(std::fs::read(path).unwrap_or_default());
    }
    Ok(hash.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
