//! The bound on calls in flight, all callers together
//! (`--max-calls-in-flight`): beyond it a call is answered
//! `RESOURCE_EXHAUSTED` at once rather than queued behind the others. It
//! sits outside authentication, so that calls whose credentials are
//! refused are bounded too: checking a processor's callback token asks the
//! database, and a flood of made-up tokens must not ask it without limit.
//!
//! A call counts until its response is ready, and a streamed access
//! report or export (the server reads the database while it streams)
//! until its last part has been sent or the stream is dropped. Only these
//! streams are held that long: their callers have proven who they are,
//! while a refusal's body to anyone could otherwise be held by a client
//! that never opens its flow-control window. A reader who stops reading a
//! report keeps its place until it reads on or its connection closes.
//! `WatchRequest` streams, which stay open for days, count only until they
//! open: their own limit ([`super::watch_limits::WatchLimits`]) bounds them.
//! Health checks are exempt, so probes keep answering under load.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use super::limits::{exhausted, is_health_check, refusal};
use crate::in_progress::{HeldBody, InProgress};

/// The methods whose calls count until their streams end.
const STREAMED: &[&str] = &[
    "/dsr.v1.RequestService/GetAccessReport",
    "/dsr.v1.RequestService/ExportAccessData",
];

/// Wraps services in [`InFlightLimit`].
#[derive(Clone)]
pub struct InFlightLayer {
    limit: usize,
    count: InProgress,
}

impl InFlightLayer {
    /// At most `limit` calls in flight.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            count: InProgress::default(),
        }
    }
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlightLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InFlightLimit {
            inner,
            limit: self.limit,
            count: self.count.clone(),
        }
    }
}

/// A service that takes a call only while fewer than its limit are in
/// flight.
#[derive(Clone)]
pub struct InFlightLimit<S> {
    inner: S,
    limit: usize,
    count: InProgress,
}

impl<S, B> Service<http::Request<B>> for InFlightLimit<S>
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

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = req.uri().path();
        if is_health_check(path) {
            return Box::pin(inner.call(req));
        }
        let Some(counted) = self.count.start_within(self.limit) else {
            let status = exhausted(
                "the server has too many calls in progress; retry shortly",
                Some(Duration::from_millis(100)),
            );
            return Box::pin(async move { Ok(refusal(&req, status)) });
        };
        let whole_body = STREAMED.contains(&path);
        Box::pin(async move {
            let response = inner.call(req).await?;
            if !whole_body {
                return Ok(response);
            }
            Ok(response.map(|body| {
                tonic::body::Body::new(HeldBody {
                    body,
                    guard: counted,
                })
            }))
        })
    }
}
