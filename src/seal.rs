//! Personal data at rest: sealed with AES-256-GCM, keyed hashes with
//! HMAC-SHA-256, both from `ring` (already the TLS stack's cryptography).
//!
//! A sealed value is text, `v1:<key id>:<base64url(nonce ‖ ciphertext ‖
//! tag)>`, so it names the key it was sealed with, and it is bound to its
//! row: the associated data is the column and the row's id
//! (`requests.subject/<request id>`), so a value copied into another row,
//! or another column, does not open. Nonces are 96 random bits; a key seals
//! at most a few billion values before random nonces risk repeating, which
//! a rotation ([`Keyring::active`]) long precedes.
//!
//! The keyring holds every key that may open something and names the one
//! that seals. Keys and the HMAC secret come from the keys file
//! (`--keys-file`, or its text in `DSR_KEYS`):
//!
//! ```yaml
//! active: k2026-12            # the key that seals
//! keys:                       # every key that may open: the active one and older ones
//!   - { id: k2026-12, key: <base64 of 32 random bytes> }
//!   - { id: k2026-06, key: <base64 of 32 random bytes> }
//! hmac_secret: <base64 of at least 32 random bytes>   # fingerprints, suppression list
//! ```
//!
//! The HMAC secret cannot rotate the way keys do: the idempotency
//! fingerprints and the suppression list are looked up by it, so changing
//! it forgets them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

/// Why a sealed value does not open.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Sealed with a key the keyring does not hold.
    #[error("sealed with key {0:?}, which is not configured (see --keys-file)")]
    UnknownKey(String),
    /// The key is there, but the value does not open with it: a wrong key
    /// under that id, a damaged value, or a value moved from another row.
    #[error(
        "does not open with key {0:?}: a different key under that id, or a damaged or moved value"
    )]
    Rejected(String),
    /// Not a sealed value at all.
    #[error("is not a sealed value")]
    Malformed,
}

/// The keys that seal and open personal data, and the secret of keyed
/// hashes.
#[derive(Clone)]
pub struct Keyring {
    keys: BTreeMap<String, [u8; 32]>,
    active: String,
    hmac: hmac::Key,
    /// Generated for this process only (tests, tools): nothing sealed
    /// with it survives the process.
    ephemeral: bool,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// The keys file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    active: String,
    keys: Vec<KeyEntry>,
    hmac_secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    key: String,
}

/// Whether `id` is a usable key id: 1 to 32 of `[A-Za-z0-9_-]`.
fn valid_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Keyring {
    /// Reads the keys file's text; errors say which entry is wrong, never
    /// a key.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: File =
            serde_yaml_ng::from_str(text).map_err(|e| anyhow::anyhow!("not a keys file: {e}"))?;
        let mut keys = BTreeMap::new();
        for (i, entry) in file.keys.iter().enumerate() {
            if !valid_id(&entry.id) {
                anyhow::bail!("keys[{i}].id must be 1 to 32 characters of [A-Za-z0-9_-]");
            }
            let bytes = STANDARD
                .decode(entry.key.trim())
                .map_err(|_| anyhow::anyhow!("keys[{i}] ({}): the key is not base64", entry.id))?;
            let key: [u8; 32] = bytes.try_into().map_err(|_| {
                anyhow::anyhow!("keys[{i}] ({}): the key must be 32 bytes", entry.id)
            })?;
            if keys.insert(entry.id.clone(), key).is_some() {
                anyhow::bail!("keys[{i}]: the id {:?} is listed twice", entry.id);
            }
        }
        if !keys.contains_key(&file.active) {
            anyhow::bail!("active: {:?} is not one of the keys listed", file.active);
        }
        let secret = STANDARD
            .decode(file.hmac_secret.trim())
            .map_err(|_| anyhow::anyhow!("hmac_secret is not base64"))?;
        if secret.len() < 32 {
            anyhow::bail!("hmac_secret must be at least 32 bytes");
        }
        Ok(Self {
            keys,
            active: file.active,
            hmac: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            ephemeral: false,
        })
    }

    /// Reads the keys file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the keys file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("keys file {}: {e}", path.display()))
    }

    /// A new keys file's text: one random key (`id`), a random HMAC
    /// secret.
    pub fn generate(id: &str) -> String {
        let rng = SystemRandom::new();
        let mut key = [0u8; 32];
        let mut secret = [0u8; 32];
        rng.fill(&mut key).expect("the system's random numbers");
        rng.fill(&mut secret).expect("the system's random numbers");
        format!(
            "# Generated by dsr-orchestrator. Keep it secret; without it nothing\n\
             # sealed under these keys can be read again.\n\
             active: {id}\nkeys:\n  - id: {id}\n    key: {}\nhmac_secret: {}\n",
            STANDARD.encode(key),
            STANDARD.encode(secret)
        )
    }

    /// A keyring for this process only, for tests and tools that keep
    /// nothing.
    pub fn ephemeral() -> Self {
        let mut ring = Self::parse(&Self::generate("ephemeral")).expect("a generated keys file");
        ring.ephemeral = true;
        ring
    }

    /// Whether this keyring lives only as long as the process.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The id of the key that seals.
    pub fn active(&self) -> &str {
        &self.active
    }

    /// Every key id this keyring can open.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    fn aead(&self, id: &str) -> Option<LessSafeKey> {
        let key = self.keys.get(id)?;
        Some(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key).expect("32 bytes make an AES-256 key"),
        ))
    }

    /// Seals `plain` for the row `bound_to` (its column and id) with the
    /// active key.
    pub fn seal(&self, plain: &[u8], bound_to: &str) -> String {
        let key = self.aead(&self.active).expect("the active key is held");
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random numbers");
        let mut data = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(bound_to.as_bytes()),
            &mut data,
        )
        .expect("AES-GCM seals any length we store");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("v1:{}:{}", self.active, URL_SAFE_NO_PAD.encode(out))
    }

    /// The key id a sealed value names, if it is one.
    pub fn key_of(sealed: &str) -> Option<&str> {
        let rest = sealed.strip_prefix("v1:")?;
        rest.split_once(':').map(|(id, _)| id)
    }

    /// Whether `text` is a sealed value (rather than legacy plaintext).
    pub fn is_sealed(text: &str) -> bool {
        Self::key_of(text).is_some()
    }

    /// Opens a value sealed for `bound_to`.
    pub fn open(&self, sealed: &str, bound_to: &str) -> Result<Vec<u8>, OpenError> {
        let rest = sealed.strip_prefix("v1:").ok_or(OpenError::Malformed)?;
        let (id, body) = rest.split_once(':').ok_or(OpenError::Malformed)?;
        let key = self
            .aead(id)
            .ok_or_else(|| OpenError::UnknownKey(id.to_string()))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| OpenError::Malformed)?;
        if bytes.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(OpenError::Malformed);
        }
        let (nonce, data) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Malformed)?;
        let mut data = data.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(bound_to.as_bytes()), &mut data)
            .map_err(|_| OpenError::Rejected(id.to_string()))?;
        Ok(plain.to_vec())
    }

    /// The keyed hash (HMAC-SHA-256, hex) of `parts`, each ended by a
    /// newline.
    pub fn keyed_hash(&self, parts: &[&str]) -> String {
        let mut ctx = hmac::Context::with_key(&self.hmac);
        for part in parts {
            ctx.update(part.as_bytes());
            ctx.update(b"\n");
        }
        hex::encode(ctx.sign().as_ref())
    }
}

/// What a sealed column's value is bound to: the column and the row's id.
pub fn bound(column: &str, row: impl fmt::Display) -> String {
    format!("{column}/{row}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_for_its_row_and_with_its_key() {
        let ring = Keyring::ephemeral();
        let sealed = ring.seal(b"jane@example.com", "requests.subject/r1");
        assert!(!sealed.contains("jane"));
        assert_eq!(Keyring::key_of(&sealed), Some("ephemeral"));
        assert_eq!(
            ring.open(&sealed, "requests.subject/r1").unwrap(),
            b"jane@example.com"
        );
        assert_eq!(
            ring.open(&sealed, "requests.subject/r2"),
            Err(OpenError::Rejected("ephemeral".into()))
        );
        let other = Keyring::ephemeral();
        assert_eq!(
            other.open(&sealed, "requests.subject/r1"),
            Err(OpenError::Rejected("ephemeral".into())),
            "same id, another key"
        );
        let renamed = sealed.replacen("ephemeral", "gone", 1);
        assert_eq!(
            ring.open(&renamed, "requests.subject/r1"),
            Err(OpenError::UnknownKey("gone".into()))
        );
        assert_eq!(ring.open("[1, 2]", "x"), Err(OpenError::Malformed));
        assert_ne!(
            ring.seal(b"x", "a"),
            ring.seal(b"x", "a"),
            "a fresh nonce every time"
        );
    }

    #[test]
    fn keys_files_are_checked_without_showing_keys() {
        let text = Keyring::generate("k1");
        let ring = Keyring::parse(&text).unwrap();
        assert_eq!(ring.active(), "k1");
        assert!(!format!("{ring:?}").contains(&text[text.find("key: ").unwrap() + 5..][..10]));
        for (bad, says) in [
            ("active: k9\nkeys: []\nhmac_secret: x", "active"),
            (&text.replace("active: k1", "active: k2") as &str, "active"),
            (&text.replace("id: k1", "id: 'k 1'"), "keys[0].id"),
            (&text.replacen("key: ", "key: AAAA", 1), "keys[0]"),
        ] {
            let err = Keyring::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        let short = format!(
            "active: k1\nkeys:\n  - id: k1\n    key: {}\nhmac_secret: {}\n",
            STANDARD.encode([7u8; 32]),
            STANDARD.encode([1u8; 16])
        );
        assert!(
            Keyring::parse(&short)
                .unwrap_err()
                .to_string()
                .contains("hmac_secret")
        );
    }

    #[test]
    fn keyed_hashes_depend_on_the_secret() {
        let a = Keyring::ephemeral();
        let b = Keyring::ephemeral();
        assert_eq!(a.keyed_hash(&["EMAIL", "x"]), a.keyed_hash(&["EMAIL", "x"]));
        assert_ne!(a.keyed_hash(&["EMAIL", "x"]), b.keyed_hash(&["EMAIL", "x"]));
        assert_ne!(a.keyed_hash(&["EMAIL", "x"]), a.keyed_hash(&["EMAILx"]));
    }
}
