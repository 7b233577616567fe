//! The auth file (`--auth-file`): the principals this server knows and how
//! each proves who it is. YAML, every key checked (an unknown one is an
//! error, not a silently ignored typo):
//!
//! ```yaml
//! tokens:                        # static API tokens, listed by SHA-256
//!   - principal: privacy-portal
//!     sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//!     roles: [submitter]
//! jwt:                           # bearer JWTs, verified against a JWKS
//!   jwks_file: /etc/dsr/jwks.json        # or jwks_url: https://idp.example/jwks.json
//!   issuer: https://idp.example
//!   audience: dsr-orchestrator
//!   principal_claim: sub                 # default `sub`
//!   roles_claim: roles                   # default `roles`: a list, or a space-separated string
//!   refresh: 5m                          # how often a JWKS URL is fetched again; default 5m
//!   refetch: 10s                         # least time between fetches for unknown key ids; default 10s
//!   leeway: 30s                          # clock skew allowed on exp and nbf; default 30s
//! client_certificates:           # mutual TLS (needs --tls-client-ca)
//!   - common_name: ops-console.corp.example   # or san: spiffe://corp/ns/dsr/sa/ops (DNS or URI SAN)
//!     principal: ops-console
//!     roles: [auditor, operator]
//! ```
//!
//! A token is never written in the file, only its SHA-256 (lower-case
//! hex), so the file is no key to the service. The server reads the file
//! again when it changes; a token taken out of it is refused from then on.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Principal, Role};
use crate::domain::{PrincipalName, Violations};

/// Where the JWKS comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// A file, read again when it changes.
    File(PathBuf),
    /// An HTTPS URL, fetched every `refresh` and when a token names a key
    /// id it does not know.
    Url(String),
}

/// How bearer JWTs are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtConfig {
    /// The keys.
    pub jwks: JwksSource,
    /// The `iss` a token must carry.
    pub issuer: String,
    /// The `aud` a token must carry.
    pub audience: String,
    /// The claim naming the principal.
    pub principal_claim: String,
    /// The claim listing the roles.
    pub roles_claim: String,
    /// How often a JWKS URL is fetched again.
    pub refresh: Duration,
    /// Least time between fetches of a JWKS URL for key ids it lacks.
    pub refetch: Duration,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

/// What in a client certificate names a principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertMatch {
    /// The subject's common name.
    CommonName(String),
    /// A DNS or URI subject alternative name.
    San(String),
}

/// The auth file, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Principals by the SHA-256 (hex) of their static token.
    pub tokens: HashMap<String, Principal>,
    /// Bearer JWTs, if accepted.
    pub jwt: Option<JwtConfig>,
    /// Client certificates and their principals.
    pub certificates: Vec<(CertMatch, Principal)>,
}

impl AuthConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the auth file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("auth file {}: {e}", path.display()))
    }

    /// Checks the file's text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: File = serde_yaml_ng::from_str(text)?;
        let mut config = AuthConfig::default();
        for (i, t) in file.tokens.into_iter().enumerate() {
            let hash = t.sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                anyhow::bail!("tokens[{i}].sha256: must be 64 hexadecimal digits");
            }
            let principal = principal(&format!("tokens[{i}]"), &t.principal, &t.roles)?;
            if config.tokens.insert(hash, principal).is_some() {
                anyhow::bail!("tokens[{i}].sha256: the same token is listed twice");
            }
        }
        for (i, c) in file.client_certificates.into_iter().enumerate() {
            let at = format!("client_certificates[{i}]");
            let matcher = match (c.common_name, c.san) {
                (Some(cn), None) if !cn.is_empty() => CertMatch::CommonName(cn),
                (None, Some(san)) if !san.is_empty() => CertMatch::San(san),
                _ => anyhow::bail!("{at}: give exactly one of common_name and san"),
            };
            config
                .certificates
                .push((matcher, principal(&at, &c.principal, &c.roles)?));
        }
        if let Some(j) = file.jwt {
            let jwks = match (j.jwks_file, j.jwks_url) {
                (Some(f), None) => JwksSource::File(f),
                (None, Some(u)) if jwks_url_ok(&u) => JwksSource::Url(u),
                (None, Some(_)) => anyhow::bail!(
                    "jwt.jwks_url: must be an https:// URL (http:// only to a loopback \
                     address), without user information"
                ),
                _ => anyhow::bail!("jwt: give exactly one of jwks_file and jwks_url"),
            };
            if j.issuer.is_empty() || j.audience.is_empty() {
                anyhow::bail!("jwt: issuer and audience are required");
            }
            config.jwt = Some(JwtConfig {
                jwks,
                issuer: j.issuer,
                audience: j.audience,
                principal_claim: j.principal_claim.unwrap_or_else(|| "sub".into()),
                roles_claim: j.roles_claim.unwrap_or_else(|| "roles".into()),
                refresh: duration("jwt.refresh", j.refresh, Duration::from_secs(300))?,
                refetch: duration("jwt.refetch", j.refetch, Duration::from_secs(10))?,
                leeway: duration("jwt.leeway", j.leeway, Duration::from_secs(30))?,
            });
        }
        Ok(config)
    }

    /// Whether any credential is configured: without one, the server
    /// authenticates no one.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.jwt.is_none() && self.certificates.is_empty()
    }

    /// The principal of a static token, if listed.
    pub fn token(&self, token: &str) -> Option<&Principal> {
        self.token_by_digest(&token_digest(token))
    }

    /// The principal of a static token given by its [`token_digest`], if
    /// listed.
    pub fn token_by_digest(&self, digest: &str) -> Option<&Principal> {
        self.tokens.get(digest)
    }
}

/// Whether `url` may serve the keys that JWTs are verified with: whoever
/// can change them in transit can forge any principal, so `https://`,
/// or plaintext only to a loopback address written in the URL (a name,
/// `127.0.0.1.example`, `127.0.0.1@host`, could be anywhere); read as the
/// HTTP client reads it, without user information.
fn jwks_url_ok(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let loopback = url
        .host_str()
        .and_then(|h| h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback());
    url.username().is_empty()
        && url.password().is_none()
        && (url.scheme() == "https" || (url.scheme() == "http" && loopback))
}

/// How the auth file lists a static token: its SHA-256, in hex.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn principal(at: &str, name: &str, roles: &[String]) -> anyhow::Result<Principal> {
    let name = PrincipalName::parse(name).map_err(|v| {
        // The name's violations are at its own (empty) path: put them at
        // the entry's.
        let mut at_entry = Violations::new();
        at_entry.take(&format!("{at}.principal"), Err::<(), _>(v));
        anyhow::anyhow!("{at_entry}")
    })?;
    let mut set = BTreeSet::new();
    for (i, r) in roles.iter().enumerate() {
        let role = Role::parse(r).ok_or_else(|| {
            anyhow::anyhow!(
                "{at}.roles[{i}]: unknown role {r:?} (submitter, auditor, operator, admin)"
            )
        })?;
        set.insert(role);
    }
    if set.is_empty() {
        anyhow::bail!("{at}.roles: at least one role is required");
    }
    Ok(Principal { name, roles: set })
}

fn duration(at: &str, value: Option<String>, default: Duration) -> anyhow::Result<Duration> {
    match value {
        None => Ok(default),
        Some(v) => humantime::parse_duration(&v).map_err(|e| anyhow::anyhow!("{at}: {e}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    jwt: Option<JwtEntry>,
    #[serde(default)]
    client_certificates: Vec<CertEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    principal: String,
    sha256: String,
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtEntry {
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    issuer: String,
    audience: String,
    principal_claim: Option<String>,
    roles_claim: Option<String>,
    refresh: Option<String>,
    refetch: Option<String>,
    leeway: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertEntry {
    common_name: Option<String>,
    san: Option<String>,
    principal: String,
    roles: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys come over TLS, or in plaintext from a loopback address only,
    /// the URL read as the client reads it.
    #[test]
    fn a_jwks_url_is_tls_or_loopback() {
        for ok in [
            "https://idp.example/jwks.json",
            "HTTPS://idp.example/jwks.json",
            "http://127.0.0.1:8080/jwks.json",
            "http://[::1]:8080/jwks.json",
            "http://2130706433/jwks.json",
        ] {
            assert!(jwks_url_ok(ok), "{ok}");
        }
        for refused in [
            "http://idp.example/jwks.json",
            "http://127.0.0.1.example/jwks.json",
            "http://127.0.0.1@idp.example/jwks.json",
            "https://user:secret@idp.example/jwks.json",
            "http://localhost/jwks.json",
            "ftp://127.0.0.1/jwks.json",
            "not a url",
        ] {
            assert!(!jwks_url_ok(refused), "{refused}");
        }
    }

    #[test]
    fn a_complete_file_is_read() {
        let hash = hex::encode(Sha256::digest(b"s3cret"));
        let config = AuthConfig::parse(&format!(
            "tokens:\n  - {{principal: portal, sha256: {hash}, roles: [submitter]}}\n\
             jwt: {{jwks_file: /etc/jwks.json, issuer: https://idp, audience: dsr}}\n\
             client_certificates:\n  - {{san: spiffe://corp/ops, principal: ops, roles: [auditor, operator]}}\n"
        ))
        .unwrap();
        assert_eq!(config.token("s3cret").unwrap().name.as_str(), "portal");
        assert!(config.token("other").is_none());
        let jwt = config.jwt.unwrap();
        assert_eq!(jwt.principal_claim, "sub");
        assert_eq!(jwt.refresh, Duration::from_secs(300));
        assert_eq!(
            config.certificates[0].0,
            CertMatch::San("spiffe://corp/ops".into())
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (text, expected) in [
            (
                "tokens: [{principal: p, sha256: abc, roles: [submitter]}]",
                "tokens[0].sha256",
            ),
            (
                &format!(
                    "tokens: [{{principal: p, sha256: {}, roles: [boss]}}]",
                    "a".repeat(64)
                ),
                "tokens[0].roles[0]",
            ),
            ("jwt: {issuer: i, audience: a}", "jwt: give exactly one"),
            (
                "client_certificates: [{principal: p, roles: [admin]}]",
                "client_certificates[0]",
            ),
            ("tokenz: []", "unknown field"),
            (
                &format!(
                    "tokens: [{{principal: system, sha256: {}, roles: [admin]}}]",
                    "a".repeat(64)
                ),
                "tokens[0].principal: must be",
            ),
        ] {
            let e = AuthConfig::parse(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
        }
        assert!(AuthConfig::parse("{}").unwrap().is_empty());
    }
}
