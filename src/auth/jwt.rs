//! Bearer JWTs: the keys (a JWKS, from a file or an HTTPS URL) and the
//! check of a token against them and the configured issuer and audience.
//!
//! Only asymmetric keys are taken (RSA, EC, Ed25519): a JWKS is published,
//! so a symmetric key in it would let anyone sign. A token must name its
//! key (`kid`), its algorithm must be the key's, and it must carry `exp`,
//! `iss` and `aud`; `nbf` is checked when present. A token naming a key id
//! the set does not hold makes the server fetch a JWKS URL again (at most
//! every `jwt.refetch`, ten seconds by default, so unknown key ids cannot
//! make it hammer the identity provider), so keys rotated there are found
//! without waiting for the next refresh.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::config::{JwksSource, JwtConfig};
use super::{Principal, Role};
use crate::domain::PrincipalName;

/// Most bytes of a JWKS document.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// A JWKS and when it was last asked for.
pub struct Jwks {
    source: JwksSource,
    keys: RwLock<HashMap<String, (DecodingKey, Algorithm)>>,
    /// When the set was last read or fetched, or a fetch begun, whether or
    /// not it succeeded: unknown key ids fetch at most once a `refetch`,
    /// however many tokens name them and whether or not the URL answers.
    asked: std::sync::Mutex<Option<Instant>>,
    client: reqwest::Client,
}

impl Jwks {
    /// The keys of `source`, read now. A file that cannot be read is an
    /// error (the configuration is wrong); a URL that cannot be fetched is
    /// not (the identity provider may be away for a moment): the set
    /// starts empty and is fetched again when a token needs it, and at
    /// every refresh.
    pub async fn load(source: JwksSource) -> anyhow::Result<Self> {
        let jwks = Self {
            source,
            keys: RwLock::default(),
            asked: std::sync::Mutex::default(),
            client: crate::tls::http_client()?,
        };
        match (jwks.refresh().await, &jwks.source) {
            (Ok(()), _) => {}
            (Err(e), JwksSource::Url(_)) => tracing::warn!(
                error = %format!("{e:#}"),
                "the JWKS cannot be fetched now; JWTs are refused until it can"
            ),
            (Err(e), JwksSource::File(_)) => return Err(e),
        }
        Ok(jwks)
    }

    /// Reads the set again (a file, or the URL).
    pub async fn refresh(&self) -> anyhow::Result<()> {
        *self.asked.lock().expect("jwks lock") = Some(Instant::now());
        let text = match &self.source {
            JwksSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read the JWKS {}: {e}", path.display()))?,
            JwksSource::Url(url) => {
                let mut response = self
                    .client
                    .get(url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| anyhow::anyhow!("cannot fetch the JWKS {url}: {e}"))?;
                // Read no further than the limit, whatever it sends.
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await? {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_JWKS_BYTES {
                        anyhow::bail!("the JWKS {url} is larger than {MAX_JWKS_BYTES} bytes");
                    }
                }
                String::from_utf8(body)?
            }
        };
        let keys = parse_jwks(&text)?;
        *self.keys.write().expect("jwks lock") = keys;
        Ok(())
    }

    /// The key `kid`, fetching a URL's set again when it is unknown and
    /// the set was last asked for at least `refetch` ago.
    async fn key(&self, kid: &str, refetch: Duration) -> Option<(DecodingKey, Algorithm)> {
        if let Some(k) = self.keys.read().expect("jwks lock").get(kid) {
            return Some(k.clone());
        }
        // Taken and marked at once: one fetch a `refetch`, not one per
        // token that comes while it runs or while the URL does not answer.
        let due = {
            let mut asked = self.asked.lock().expect("jwks lock");
            let due = asked.is_none_or(|at| at.elapsed() >= refetch);
            if due {
                *asked = Some(Instant::now());
            }
            due
        };
        if matches!(self.source, JwksSource::Url(_)) && due {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "cannot refresh the JWKS");
            }
            return self.keys.read().expect("jwks lock").get(kid).cloned();
        }
        None
    }

    /// The principal a bearer JWT proves, or why it proves none.
    pub async fn verify(&self, token: &str, config: &JwtConfig) -> Result<Principal, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        let kid = header.kid.ok_or("the JWT names no key (kid)")?;
        let (key, algorithm) = self
            .key(&kid, config.refetch)
            .await
            .ok_or_else(|| format!("the JWT's key id {kid:?} is not in the JWKS"))?;
        if header.alg != algorithm {
            return Err(format!(
                "the JWT's algorithm {:?} is not its key's ({algorithm:?})",
                header.alg
            ));
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway.as_secs();
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the JWT has expired".into(),
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                    "the JWT is not valid yet (nbf)".into()
                }
                jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                    "the JWT is for another audience".into()
                }
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
                    "the JWT is from another issuer".into()
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "the JWT's signature does not verify".into()
                }
                _ => format!("the JWT is invalid: {e}"),
            })?
            .claims;
        principal_of(&claims, config)
    }
}

/// The principal and roles named by a token's claims.
fn principal_of(claims: &serde_json::Value, config: &JwtConfig) -> Result<Principal, String> {
    let name = claims
        .get(&config.principal_claim)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("the JWT has no {:?} claim", config.principal_claim))?;
    let name = PrincipalName::parse(name).map_err(|_| {
        format!(
            "the JWT's {:?} claim is not a principal name",
            config.principal_claim
        )
    })?;
    // A list of names, or one string of names separated by spaces (as
    // OAuth's `scope`); names that are no role are ignored.
    let names: Vec<&str> = match claims.get(&config.roles_claim) {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_str()).collect(),
        Some(serde_json::Value::String(s)) => s.split_whitespace().collect(),
        _ => Vec::new(),
    };
    let roles: BTreeSet<Role> = names.into_iter().filter_map(Role::parse).collect();
    Ok(Principal { name, roles })
}

/// The asymmetric keys of a JWKS document, by key id.
fn parse_jwks(text: &str) -> anyhow::Result<HashMap<String, (DecodingKey, Algorithm)>> {
    let set: JwkSet = serde_json::from_str(text)?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::OctetKey(_) | AlgorithmParameters::Other(_), _) => continue,
            (_, Some(alg)) => match alg.to_string().parse::<Algorithm>() {
                Ok(a) => a,
                Err(_) => continue,
            },
            (AlgorithmParameters::RSA(_), None) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(p), None) => match p.curve {
                jsonwebtoken::jwk::EllipticCurve::P384 => Algorithm::ES384,
                _ => Algorithm::ES256,
            },
            (AlgorithmParameters::OctetKeyPair(_), None) => Algorithm::EdDSA,
            _ => continue,
        };
        if matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            continue;
        }
        keys.insert(kid, (DecodingKey::from_jwk(jwk)?, algorithm));
    }
    Ok(keys)
}
