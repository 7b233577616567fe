//! Where deliveries may go. A push processor's endpoint is checked when it
//! is registered or changed (by RPC or by the processors file):
//!
//! - `http://` (plaintext: identities would cross the network readable)
//!   only to a loopback host, unless the operator allows plaintext
//!   (`--allow-plaintext-processors`);
//! - no host that is, or resolves to, a link-local address (where cloud
//!   metadata services answer: 169.254.169.254, `fe80::/10`), a known
//!   metadata address or name, or an unspecified, multicast or broadcast
//!   address: a registered "processor" must not be a way to make the
//!   orchestrator fetch its own cloud credentials.
//!
//! A name is resolved at the check, through the same [`Lookup`] as the
//! connections; one that does not resolve then is taken (an internal name
//! may resolve only where the orchestrator runs). What it resolves to
//! later is checked again at every connection, by the same rule (see
//! [`super::lookup`]).

use std::net::IpAddr;

use super::lookup::{Lookup, host_name, refusal};
use crate::domain::{AdapterConfig, Violations, is_plaintext};

/// Host names of cloud metadata services.
pub(super) const METADATA_NAMES: &[&str] =
    &["metadata.google.internal", "metadata", "instance-data"];

/// Checks the adapter's endpoint, if it has one, resolving its name with
/// `lookup` and taking plaintext beyond loopback only if `lookup` allows
/// it; violations under the endpoint's field (`adapter.grpc.endpoint`, ...).
pub async fn check(adapter: &AdapterConfig, lookup: &Lookup) -> Result<(), Violations> {
    let (endpoint, field) = match adapter {
        AdapterConfig::Grpc { endpoint, .. } => (endpoint, "adapter.grpc.endpoint"),
        AdapterConfig::Webhook { url, .. } => (url, "adapter.webhook.url"),
        AdapterConfig::Dsr { endpoint, .. } => (endpoint, "adapter.dsr.endpoint"),
        AdapterConfig::OpenDsr { url, .. } => (url, "adapter.opendsr.url"),
        AdapterConfig::Pull | AdapterConfig::Manual => return Ok(()),
    };
    check_address(endpoint, field, lookup).await
}

/// Checks `endpoint`, a gRPC endpoint or URL already in shape, by the
/// rules of the module's documentation; violations under `field`.
pub(super) async fn check_address(
    endpoint: &str,
    field: &str,
    lookup: &Lookup,
) -> Result<(), Violations> {
    let Ok(uri) = endpoint.parse::<http::Uri>() else {
        return Ok(()); // the domain has already refused it
    };
    let host = host_name(uri.host().unwrap_or(""));
    let port = uri.port_u16().unwrap_or(443);
    // Refused when the whole deployment would be: any address it has (a
    // connection drops those, see `super::lookup`).
    let addresses: Vec<IpAddr> = match lookup.addresses(&host, port).await {
        Ok(found) => found.iter().map(|a| a.ip()).collect(),
        Err(e) if refusal(&e).is_some() => {
            return Err(Violations::one(
                field,
                "must not be a cloud metadata service",
            ));
        }
        Err(_) => Vec::new(),
    };
    if let Some(bad) = addresses.iter().find(|ip| forbidden(ip)) {
        return Err(Violations::one(
            field,
            format!(
                "must not resolve to a link-local, metadata, unspecified or multicast address ({bad})"
            ),
        ));
    }
    let loopback =
        host == "localhost" || (!addresses.is_empty() && addresses.iter().all(IpAddr::is_loopback));
    if is_plaintext(endpoint) && !loopback && !lookup.allows_plaintext() {
        return Err(Violations::one(
            field,
            "must be https:// (plaintext http:// is taken only for loopback hosts, \
             or when the server is run with --allow-plaintext-processors)",
        ));
    }
    Ok(())
}

/// Addresses no delivery may go to.
pub(super) fn forbidden(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                // Alibaba Cloud's metadata service.
                || v4.octets() == [100, 100, 100, 200]
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                // AWS's metadata service over IPv6.
                || v6.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]
                || v6.to_ipv4_mapped().is_some_and(|v4| forbidden(&IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn grpc(endpoint: &str) -> AdapterConfig {
        AdapterConfig::grpc(endpoint, Some(Duration::from_secs(1)), None).unwrap()
    }

    #[tokio::test]
    async fn destinations() {
        let (strict, plaintext) = (Lookup::system(false), Lookup::system(true));
        for ok in [
            "https://10.0.0.5:443",
            "http://127.0.0.1:9",
            "http://localhost:9",
            "http://[::1]:9",
        ] {
            assert!(check(&grpc(ok), &strict).await.is_ok(), "{ok}");
        }
        for bad in [
            "https://169.254.169.254:80",
            "https://metadata.google.internal:80",
            "https://[fe80::1]:443",
            "https://0.0.0.0:443",
            "https://[fd00:ec2::254]:80",
            "https://100.100.100.200:80",
            "http://10.0.0.5:80",
            "HTTP://10.0.0.5:80",
            "Http://10.0.0.5:80",
        ] {
            assert!(check(&grpc(bad), &strict).await.is_err(), "{bad}");
        }
        assert!(check(&grpc("http://10.0.0.5:80"), &plaintext).await.is_ok());
        assert!(
            check(&grpc("https://169.254.169.254:80"), &plaintext)
                .await
                .is_err()
        );
        assert!(check(&AdapterConfig::Pull, &strict).await.is_ok());
        let webhook = |url| AdapterConfig::webhook(url, None, None).unwrap();
        assert!(
            check(&webhook("http://127.0.0.1:9/hook"), &strict)
                .await
                .is_ok()
        );
        let refused = check(&webhook("https://169.254.169.254/latest"), &strict).await;
        assert_eq!(
            refused.unwrap_err().iter().next().unwrap().field,
            "adapter.webhook.url"
        );
    }
}
