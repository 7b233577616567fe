//! Bounds on what callers may ask at once, so one caller (or a flood of
//! them) cannot starve the others or the server itself:
//!
//! - **calls in flight**, all callers together (`--max-calls-in-flight`),
//!   counted before the caller is identified ([`super::in_flight`]);
//! - **a rate per caller** (`--rate-limit` calls per second, bursts of
//!   `--rate-burst`), a token bucket per principal, per processor, and one
//!   for anonymous callers: beyond it `RESOURCE_EXHAUSTED` with a
//!   `google.rpc.RetryInfo` saying when a call would be taken again;
//! - **open `WatchRequest` streams**, per caller and in all
//!   ([`super::watch_limits`], used by the request service).
//!
//! The size of one message and the streams of one connection are bounded
//! by the transport (`--max-message-size`, `--max-concurrent-streams`).
//! Health checks are exempt from all of it, so probes keep answering under
//! load.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};

use crate::auth::Caller;
use crate::domain::ProcessorId;

/// The limits' settings.
#[derive(Clone, Copy, Debug)]
pub struct LimitSettings {
    /// Calls in flight, all callers together.
    pub calls_in_flight: usize,
    /// Calls per second per caller.
    pub rate: f64,
    /// Calls a caller may make at once beyond the rate.
    pub burst: f64,
    /// Open watch streams per caller.
    pub watches_per_caller: usize,
    /// Open watch streams in all.
    pub watches: usize,
    /// How long data handed to a streamed report's reader may wait to be
    /// taken before the reader's connection is closed (see
    /// [`super::in_flight`]).
    pub stalled_reader: std::time::Duration,
}

/// Wraps services in [`Limit`].
#[derive(Clone)]
pub struct LimitLayer {
    state: Arc<Shared>,
}

struct Shared {
    settings: LimitSettings,
    /// Principals', processors' and anonymous callers' buckets.
    callers: Mutex<Buckets>,
    /// OpenDSR callbacks' buckets, by the processor their path names.
    callbacks: Mutex<Buckets>,
}

/// Token buckets, by key.
#[derive(Default)]
struct Buckets {
    by_key: HashMap<String, Bucket>,
    /// When the buckets gone quiet were last dropped.
    pruned: Option<Instant>,
}

/// Buckets kept before those gone quiet are dropped; also the most
/// OpenDSR callbacks' buckets kept, as their keys come from paths no one
/// has proven yet: beyond it the callbacks of processors without a bucket
/// share one. Callers proven by their credentials are a bounded set and
/// always have their own.
const MAX_BUCKETS: usize = 10_000;

/// The bucket of OpenDSR callbacks beyond [`MAX_BUCKETS`], and of those
/// whose path names no valid processor id.
const SHARED_CALLBACKS: &str = "";

/// A bucket not touched for this long is full again, and is dropped.
const QUIET: Duration = Duration::from_secs(60);

/// A caller's token bucket.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Whose bucket a call takes from.
#[derive(Debug, PartialEq)]
enum RateKey {
    /// A caller proven by its credentials, or anonymous.
    Caller(String),
    /// An OpenDSR callback for the processor its path names (`None`: a
    /// path that names no valid processor id).
    Callback(Option<ProcessorId>),
}

impl LimitLayer {
    /// Limits with `settings`.
    pub fn new(settings: LimitSettings) -> Self {
        Self {
            state: Arc::new(Shared {
                settings,
                callers: Mutex::default(),
                callbacks: Mutex::default(),
            }),
        }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Limit {
            inner,
            state: self.state.clone(),
        }
    }
}

/// A service that takes a call only within the limits.
#[derive(Clone)]
pub struct Limit<S> {
    inner: S,
    state: Arc<Shared>,
}

impl Shared {
    /// Takes a token from `key`'s bucket, or says how long until one.
    fn take(&self, key: &RateKey) -> Result<(), Duration> {
        let now = Instant::now();
        match key {
            RateKey::Caller(key) => {
                let mut buckets = self.callers.lock().expect("rate lock");
                buckets.prune(key, now);
                buckets.take(key, now, self.settings)
            }
            RateKey::Callback(id) => {
                let mut buckets = self.callbacks.lock().expect("rate lock");
                let key = id.as_ref().map_or(SHARED_CALLBACKS, ProcessorId::as_str);
                buckets.prune(key, now);
                let kept = buckets.by_key.len() < MAX_BUCKETS || buckets.by_key.contains_key(key);
                buckets.take(
                    if kept { key } else { SHARED_CALLBACKS },
                    now,
                    self.settings,
                )
            }
        }
    }
}

impl Buckets {
    /// Drops the buckets gone quiet when there are [`MAX_BUCKETS`] and
    /// `key` is not among them, at most once a second, so that the map
    /// stays the size of the active callers.
    fn prune(&mut self, key: &str, now: Instant) {
        if self.by_key.len() >= MAX_BUCKETS
            && !self.by_key.contains_key(key)
            && self
                .pruned
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            self.by_key.retain(|_, b| now.duration_since(b.at) < QUIET);
            self.pruned = Some(now);
        }
    }

    /// Takes a token from `key`'s bucket, or says how long until one.
    fn take(&mut self, key: &str, now: Instant, settings: LimitSettings) -> Result<(), Duration> {
        let LimitSettings { rate, burst, .. } = settings;
        let bucket = self.by_key.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
    }
}

/// Whether `path` is a health check's, which no limit holds back, so
/// that probes keep answering under load.
pub(super) fn is_health_check(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

/// `RESOURCE_EXHAUSTED`, with when to try again if known.
pub(super) fn exhausted(message: &str, retry_after: Option<Duration>) -> Status {
    let mut details = ErrorDetails::new();
    if let Some(after) = retry_after {
        details.set_retry_info(Some(after));
    }
    Status::with_error_details(tonic::Code::ResourceExhausted, message, details)
}

/// The rate limit's key for `caller`.
pub(super) fn key(caller: &Caller) -> String {
    caller.actor().to_string()
}

/// The rate limit's key for a call with no caller at this layer: an
/// OpenDSR callback, which its signature proves later, has the bucket of
/// the processor its path names, so that one processor's callbacks do not
/// use up another's; any other is anonymous.
fn unproven_key(path: &str) -> RateKey {
    match path.strip_prefix(crate::auth::policy::OPENDSR_CALLBACK_PREFIX) {
        Some(rest) => {
            RateKey::Callback(ProcessorId::parse(rest.split('/').next().unwrap_or_default()).ok())
        }
        None => RateKey::Caller(key(&Caller::Anonymous)),
    }
}

impl<S, B> Service<http::Request<B>> for Limit<S>
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
        if is_health_check(req.uri().path()) {
            return Box::pin(inner.call(req));
        }
        let state = self.state.clone();
        let settings = state.settings;
        let key = match req.extensions().get::<Caller>() {
            Some(caller) => RateKey::Caller(key(caller)),
            None => unproven_key(req.uri().path()),
        };
        if let Err(after) = state.take(&key) {
            let status = exhausted(
                &format!(
                    "the caller's rate limit ({} calls/s) is reached; retry after {} ms",
                    settings.rate,
                    after.as_millis().max(1)
                ),
                Some(after),
            );
            return Box::pin(async move { Ok(refusal(&req, status)) });
        }
        Box::pin(inner.call(req))
    }
}

/// A refusal in the form the caller reads: JSON for the HTTP callback
/// API and the OpenDSR callbacks, a gRPC status otherwise.
pub(super) fn refusal<B>(
    req: &http::Request<B>,
    status: Status,
) -> http::Response<tonic::body::Body> {
    let path = req.uri().path();
    if path.starts_with(super::http::PREFIX)
        || path.starts_with(crate::auth::policy::OPENDSR_CALLBACK_PREFIX)
    {
        super::http::error_response(&status).map(tonic::body::Body::new)
    } else {
        status.into_http()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Small limits, for the unit tests of the limits.
    pub(in crate::api) fn settings() -> LimitSettings {
        LimitSettings {
            calls_in_flight: 10,
            rate: 10.0,
            burst: 3.0,
            watches_per_caller: 1,
            watches: 2,
            stalled_reader: std::time::Duration::from_secs(60),
        }
    }

    fn caller(key: &str) -> RateKey {
        RateKey::Caller(key.to_string())
    }

    fn callback(id: &str) -> RateKey {
        unproven_key(&format!("/opendsr/callbacks/{id}"))
    }

    #[test]
    fn each_caller_has_its_own_bucket() {
        let layer = LimitLayer::new(settings());
        for _ in 0..3 {
            assert!(layer.state.take(&caller("a")).is_ok());
        }
        let wait = layer.state.take(&caller("a")).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(
            layer.state.take(&caller("b")).is_ok(),
            "another caller is not held up"
        );
    }

    #[test]
    fn opendsr_callbacks_have_a_bucket_per_processor() {
        let vendor = ProcessorId::parse("vendor").unwrap();
        assert_eq!(callback("vendor"), RateKey::Callback(Some(vendor.clone())));
        assert_eq!(callback("vendor/"), RateKey::Callback(Some(vendor)));
        assert_eq!(callback("ven%64or"), RateKey::Callback(None));
        assert_eq!(
            unproven_key("/v1/instructions/x/complete"),
            RateKey::Caller(key(&Caller::Anonymous))
        );
    }

    #[test]
    fn callbacks_beyond_the_most_kept_share_one_bucket_and_callers_never_do() {
        let layer = LimitLayer::new(settings());
        for i in 0..MAX_BUCKETS {
            assert!(layer.state.take(&callback(&format!("p{i}"))).is_ok());
        }
        // All active: a processor without a bucket shares one...
        for _ in 0..3 {
            assert!(layer.state.take(&callback("new")).is_ok());
        }
        assert!(
            layer.state.take(&callback("another")).is_err(),
            "one shared bucket"
        );
        let buckets = layer.state.callbacks.lock().unwrap();
        assert_eq!(buckets.by_key.len(), MAX_BUCKETS + 1);
        assert!(!buckets.by_key.contains_key("new"));
        drop(buckets);
        // ...while a proven caller still has its own.
        for _ in 0..3 {
            assert!(layer.state.take(&caller("principal")).is_ok());
        }
    }
}
