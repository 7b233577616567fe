//! The tower layer that identifies the caller of every call and refuses
//! what [`super::policy`] refuses, before any service sees the call. It
//! sits inside the per-RPC span (so refusals are traced too) and outside
//! every service; the caller it found rides in the request's extensions
//! ([`super::Caller::of`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};

use super::identify::{Authenticator, Credentials};
use super::policy::{self, Decision};
use crate::tls::server::TlsConnectInfo;

/// Wraps services in [`Authenticate`].
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    /// A layer identifying callers with `auth`.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// What a long stream's call proved itself with, kept with it (in the
/// request's extensions, for the methods [`policy::rechecked`] names) so
/// that the stream can ask again while it runs: a watch may stay open for
/// days, and a token taken out of the auth file, an expired JWT or a
/// principal that lost its role must not go on receiving events.
#[derive(Clone)]
pub struct Recheck {
    auth: Arc<Authenticator>,
    authorization: Option<String>,
    tls: Option<TlsConnectInfo>,
    allowed: policy::Allowed,
    caller: Option<super::Caller>,
}

impl Recheck {
    /// `Ok` while the credential still proves the caller that started the
    /// call, allowed to make it; otherwise the status to end the call with
    /// (`UNAUTHENTICATED`, or `PERMISSION_DENIED` for a caller whose roles
    /// no longer allow it).
    pub async fn still_allowed(&self) -> Result<(), Status> {
        let credentials = Credentials {
            authorization: self.authorization.as_deref(),
            tls: self.tls.as_ref(),
        };
        let caller = self.auth.identify(credentials).await?;
        match policy::decide(self.allowed, caller.as_ref(), self.auth.is_open()) {
            Decision::Allow if caller == self.caller => Ok(()),
            // Same credential, other roles: what the call may see was
            // decided with the old ones.
            Decision::Allow => Err(Status::unauthenticated(
                "the credential's roles changed: call again",
            )),
            Decision::Unauthenticated(why) => Err(Status::unauthenticated(why)),
            Decision::Denied(why) => Err(Status::permission_denied(why)),
        }
    }
}

/// A service that lets a call through only when its caller may make it.
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The clone that was driven to readiness serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let credentials = Credentials {
                authorization: req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok()),
                tls: req.extensions().get::<TlsConnectInfo>(),
            };
            // The HTTP callback API answers in JSON, which a refusal here
            // could not: the caller found, or why its credential was
            // refused, rides along, and the service (the gRPC processor
            // methods) refuses anyone but a processor.
            if req.uri().path().starts_with(policy::HTTP_CALLBACK_PREFIX) {
                match auth.identify(credentials).await {
                    Ok(Some(caller)) => {
                        req.extensions_mut().insert(caller);
                    }
                    Ok(None) => {}
                    Err(status) => {
                        req.extensions_mut().insert(super::Refused(status));
                    }
                }
                return inner.call(req).await;
            }
            // An OpenDSR callback proves itself by its signature: the
            // service checks it.
            if req
                .uri()
                .path()
                .starts_with(policy::OPENDSR_CALLBACK_PREFIX)
            {
                return inner.call(req).await;
            }
            // A path the server does not serve is answered UNIMPLEMENTED
            // by the server itself.
            let Some(allowed) = policy::allowed(req.uri().path()) else {
                return inner.call(req).await;
            };
            let kept = policy::rechecked(req.uri().path()).then(|| {
                (
                    credentials.authorization.map(str::to_string),
                    credentials.tls.cloned(),
                )
            });
            let caller = match auth.identify(credentials).await {
                Ok(caller) => caller,
                // A bad credential is refused whatever the method, but a
                // method open to anyone (health) does not look at it.
                Err(_) if allowed == policy::Allowed::Anyone => None,
                Err(status) => return Ok(status.into_http()),
            };
            match policy::decide(allowed, caller.as_ref(), auth.is_open()) {
                Decision::Allow => {
                    if let Some((authorization, tls)) = kept {
                        req.extensions_mut().insert(Recheck {
                            authorization,
                            tls,
                            auth: auth.clone(),
                            allowed,
                            caller: caller.clone(),
                        });
                    }
                    if let Some(caller) = caller {
                        req.extensions_mut().insert(caller);
                    }
                    inner.call(req).await
                }
                Decision::Unauthenticated(why) => Ok(Status::unauthenticated(why).into_http()),
                Decision::Denied(why) => Ok(Status::permission_denied(why).into_http()),
            }
        })
    }
}
