//! Where a connection to a processor may go, decided again at every
//! connection. [`super::destination`] checks a processor's host when it is
//! registered, but a name can be pointed elsewhere afterwards (DNS
//! rebinding): at a cloud metadata service, say, whose answers would then
//! come back to the orchestrator as a processor's. So every connection
//! the push adapters open resolves the name through a [`Lookup`], which
//! drops the addresses registration refuses (link-local, metadata,
//! unspecified, multicast) and refuses the connection when none is left. The
//! refusal fails the delivery as retryable, saying why (see
//! [`refusal`]), so the instruction escalates if the name stays pointed
//! there. A plaintext `http://` endpoint is kept to loopback addresses,
//! as at registration, unless `--allow-plaintext-processors`. gRPC channels connect through [`connector`]; HTTP clients
//! (webhooks, OpenDSR) resolve through the same lookup.
//!
//! An address written in the endpoint is not looked up: it cannot change
//! after the registration checked it.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;

use super::destination::{METADATA_NAMES, forbidden};

/// Addresses found for a name.
pub type Resolved = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Turns a host name into addresses: the system's resolver, or a test's.
pub trait Resolver: Send + Sync + 'static {
    /// The addresses of `host`, with `port`.
    fn resolve(&self, host: &str, port: u16) -> Resolved;
}

/// A shared resolver (a test's, handed to a whole server).
impl Resolver for Arc<dyn Resolver> {
    fn resolve(&self, host: &str, port: u16) -> Resolved {
        (**self).resolve(host, port)
    }
}

/// The system's resolver.
struct System;

impl Resolver for System {
    fn resolve(&self, host: &str, port: u16) -> Resolved {
        let host = host.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }
}

/// Resolves processors' host names, keeping only the addresses a delivery
/// may go to.
#[derive(Clone)]
pub struct Lookup {
    resolver: Arc<dyn Resolver>,
    /// Plaintext `http://` endpoints may go beyond loopback
    /// (`--allow-plaintext-processors`).
    allow_plaintext: bool,
    /// Keep loopback addresses only: this lookup serves a plaintext
    /// endpoint, and plaintext may not go beyond loopback.
    loopback_only: bool,
}

impl Lookup {
    /// Names resolved by `resolver`; plaintext `http://` endpoints are
    /// kept to loopback addresses unless `allow_plaintext`
    /// (`--allow-plaintext-processors`, the registration's rule applied
    /// again at each connection).
    pub fn new(resolver: impl Resolver, allow_plaintext: bool) -> Self {
        Self {
            resolver: Arc::new(resolver),
            allow_plaintext,
            loopback_only: false,
        }
    }

    /// The same with the system's resolver.
    pub fn system(allow_plaintext: bool) -> Self {
        Self::new(System, allow_plaintext)
    }

    /// The lookup for connections to `url`: kept to loopback when it is
    /// plaintext and plaintext may not go further.
    pub fn for_url(&self, url: &str) -> Self {
        Self {
            loopback_only: !self.allow_plaintext && crate::domain::is_plaintext(url),
            ..self.clone()
        }
    }

    /// Whether plaintext `http://` endpoints may go beyond loopback
    /// (`--allow-plaintext-processors`).
    pub fn allows_plaintext(&self) -> bool {
        self.allow_plaintext
    }

    /// Whether it keeps loopback addresses only.
    pub fn loopback_only(&self) -> bool {
        self.loopback_only
    }

    /// The addresses of `host` (a name, or an address as written in a
    /// URL) at `port` that a delivery may go to; an error saying why when
    /// there is none.
    pub async fn allowed(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let host = host_name(host);
        let found = self.addresses(&host, port).await?;
        let (allowed, kept_out): (Vec<_>, Vec<_>) = found
            .into_iter()
            .partition(|a| !forbidden(&a.ip()) && (!self.loopback_only || a.ip().is_loopback()));
        match (allowed.is_empty(), kept_out.first()) {
            (false, _) => Ok(allowed),
            (true, Some(bad)) if !forbidden(&bad.ip()) => Err(refused(format!(
                "{host} resolves to {}, beyond loopback, where plaintext http:// may not go \
                 (--allow-plaintext-processors)",
                bad.ip()
            ))),
            (true, Some(bad)) => Err(refused(format!(
                "{host} resolves to {}, a link-local, metadata, unspecified or multicast \
                 address no delivery may go to",
                bad.ip()
            ))),
            (true, None) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} resolves to no address"),
            )),
        }
    }
}

/// `host` as a URL gives it, without the brackets of an IPv6 address and
/// in lower case.
pub(super) fn host_name(host: &str) -> String {
    host.trim_matches(['[', ']']).to_ascii_lowercase()
}

impl Lookup {
    /// Every address of `host` (as [`host_name`] gives it) at `port`: the
    /// address itself, or what the resolver finds for a name; refused for
    /// a cloud metadata service's name.
    pub(super) async fn addresses(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if METADATA_NAMES.contains(&host) {
            return Err(refused(format!("{host} is a cloud metadata service")));
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => Ok(vec![SocketAddr::new(ip, port)]),
            Err(_) => self.resolver.resolve(host, port).await,
        }
    }
}

/// A connection not made because the processor's host is, or resolves
/// only to, addresses no delivery may go to.
#[derive(Debug)]
pub struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refused(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, Refused(why))
}

/// The [`Refused`] somewhere in `error`'s chain of causes, if any: what a
/// failed delivery reports instead of "cannot connect".
pub fn refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r);
        }
        // An I/O error's own `source` skips the error it carries.
        cause = match e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            Some(carried) => Some(carried as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

impl reqwest::dns::Resolve for Lookup {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let lookup = self.clone();
        Box::pin(async move {
            // reqwest puts the URL's port on the addresses itself.
            let found = lookup.allowed(name.as_str(), 0).await?;
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl tower::Service<Name> for Lookup {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let lookup = self.clone();
        // The connector puts the URI's port on the addresses itself.
        Box::pin(async move { Ok(lookup.allowed(name.as_str(), 0).await?.into_iter()) })
    }
}

/// The TCP connector of gRPC channels to processors (the channel adds
/// TLS when the endpoint has it): hyper's, with its racing of IPv6 and
/// IPv4 and its timeout per address, resolving through `lookup`.
pub fn connector(lookup: Lookup, connect_timeout: Duration) -> HttpConnector<Lookup> {
    let mut http = HttpConnector::new_with_resolver(lookup);
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every name with `addresses`.
    struct Fixed(Vec<IpAddr>);

    impl Resolver for Fixed {
        fn resolve(&self, _: &str, port: u16) -> Resolved {
            let found = self.0.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
            Box::pin(async move { Ok(found) })
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn only_the_addresses_a_delivery_may_go_to_are_kept() {
        let mixed = Lookup::new(Fixed(vec![ip("169.254.169.254"), ip("10.0.0.7")]), true);
        let kept = mixed.allowed("crm.example", 443).await.unwrap();
        assert_eq!(kept, vec![SocketAddr::new(ip("10.0.0.7"), 443)]);

        let rebound = Lookup::new(Fixed(vec![ip("169.254.169.254"), ip("fe80::1")]), true);
        let e = rebound.allowed("crm.example", 443).await.unwrap_err();
        let why = refusal(&e).expect("a refusal").to_string();
        assert!(
            why.contains("crm.example resolves to 169.254.169.254"),
            "{why}"
        );

        for host in ["metadata.google.internal", "[fd00:ec2::254]", "0.0.0.0"] {
            let e = mixed.allowed(host, 80).await.unwrap_err();
            assert!(refusal(&e).is_some(), "{host}");
        }
        let none = Lookup::new(Fixed(vec![]), true);
        let e = none.allowed("gone.example", 443).await.unwrap_err();
        assert!(refusal(&e).is_none());
        // An address in the URL is taken as written.
        let kept = none.allowed("[::1]", 9).await.unwrap();
        assert_eq!(kept, vec![SocketAddr::new(ip("::1"), 9)]);
    }

    #[tokio::test]
    async fn plaintext_stays_on_loopback_unless_allowed() {
        let both = |allow| Lookup::new(Fixed(vec![ip("10.0.0.7"), ip("127.0.0.1")]), allow);
        let strict = both(false);
        let plain = strict.for_url("http://crm.example:8080");
        let kept = plain.allowed("crm.example", 80).await.unwrap();
        assert_eq!(kept, vec![SocketAddr::new(ip("127.0.0.1"), 80)]);
        let kept = strict
            .for_url("https://crm.example")
            .allowed("crm.example", 443)
            .await;
        assert_eq!(kept.unwrap().len(), 2);
        let away = Lookup::new(Fixed(vec![ip("10.0.0.7")]), false);
        let e = (away
            .for_url("http://crm.example")
            .allowed("crm.example", 80)
            .await)
            .unwrap_err();
        let why = refusal(&e).expect("a refusal").to_string();
        assert!(why.contains("10.0.0.7, beyond loopback"), "{why}");
        let allowed = both(true).for_url("http://crm.example");
        assert_eq!(allowed.allowed("crm.example", 80).await.unwrap().len(), 2);
    }

    #[test]
    fn a_refusal_is_found_through_the_errors_that_wrap_it() {
        let inner = refused("x resolves to 169.254.169.254".into());
        let wrapped = io::Error::other(inner);
        assert!(refusal(&wrapped).is_some());
        assert!(refusal(&io::Error::other("refused")).is_none());
    }
}
