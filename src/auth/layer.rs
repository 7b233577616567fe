//! The tower layer that identifies the caller of every call and refuses
//! what [`super::policy`] refuses, before any service sees the call. It
//! sits inside the per-RPC span (so refusals are traced too) and outside
//! every service; the caller it found rides in the request's extensions
//! ([`super::Caller::of`]), and for a call that may outlive its
//! credential (a watch) what it proved itself with, to be asked again
//! ([`Recheck`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};

use super::identify::{Authenticator, Credentials};
use super::policy::{self, Decision};
use super::recheck::Recheck;
use crate::startup::Conn;
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
                tls: req
                    .extensions()
                    .get::<Conn<TlsConnectInfo>>()
                    .map(|c| &c.info),
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
            // Taken before the credential is checked: a change after it
            // makes the recheck ask again.
            let generation = auth.generation();
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
                    let caller = caller.map(|c| policy::acting(allowed, c));
                    if let Some((authorization, tls)) = kept {
                        req.extensions_mut().insert(Recheck::new(
                            auth.clone(),
                            generation,
                            (authorization, tls),
                            allowed,
                            caller.clone(),
                        ));
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
