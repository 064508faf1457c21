//! Secrets at rest: webhook secrets are sealed with XChaCha20-Poly1305 under a 32-byte key
//! from configuration (`secrets_key`), bound to the id of what they belong to, so a sealed
//! value copied to another row does not open.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Format of a sealed value: this byte, the 24-byte nonce, then ciphertext and tag.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("the secrets key must be the base64 of exactly 32 bytes")]
    InvalidKey,
    #[error("no secrets key is configured (secrets_key / SLIPWAY_SECRETS_KEY)")]
    NoKey,
    #[error("the sealed secret does not open with the configured key (was the key changed?)")]
    CannotOpen,
    #[error("the system random number generator failed")]
    Random,
}

/// The key secrets are sealed with. `Debug` never shows it.
#[derive(Clone)]
pub struct SecretsKey {
    cipher: XChaCha20Poly1305,
    /// HMAC-SHA256 under the same key, for digests nobody without the key can recompute.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(***)")
    }
}

impl SecretsKey {
    /// A key from its base64 form (standard alphabet, padded or not).
    pub fn from_base64(encoded: &str) -> Result<Self, SecretsError> {
        let trimmed = encoded.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trimmed)
            .map_err(|_| SecretsError::InvalidKey)?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretsError> {
        if bytes.len() != 32 {
            return Err(SecretsError::InvalidKey);
        }
        let cipher =
            XChaCha20Poly1305::new_from_slice(bytes).map_err(|_| SecretsError::InvalidKey)?;
        let mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(bytes)
            .map_err(|_| SecretsError::InvalidKey)?;
        Ok(Self { cipher, mac })
    }

    /// HMAC-SHA256 under the key of `data`, for `purpose` (which keeps digests made for one
    /// use from standing for another). Nobody without the key can recompute it, so a digest
    /// of something secret (an idempotency request hash over a body with a webhook secret)
    /// cannot be tested against guesses offline.
    pub fn keyed_digest(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// A fresh random key in base64, e.g. for `slipway dev`.
    pub fn generate_base64() -> Result<String, SecretsError> {
        let bytes = chacha20poly1305::Key::try_generate().map_err(|_| SecretsError::Random)?;
        Ok(STANDARD.encode(bytes.as_slice()))
    }

    /// Seals `secret` for the owner `bound_to` (e.g. a trigger id).
    pub fn seal(&self, secret: &[u8], bound_to: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let nonce = XNonce::try_generate().map_err(|_| SecretsError::Random)?;
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret,
                    aad: bound_to,
                },
            )
            .map_err(|_| SecretsError::Random)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`SecretsKey::seal`] sealed for the same owner.
    pub fn open(&self, sealed: &[u8], bound_to: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let (version, rest) = sealed.split_first().ok_or(SecretsError::CannotOpen)?;
        if *version != VERSION || rest.len() < NONCE_LEN {
            return Err(SecretsError::CannotOpen);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| SecretsError::CannotOpen)?;
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: bound_to,
                },
            )
            .map_err(|_| SecretsError::CannotOpen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_for_the_same_owner_and_key() {
        let key = SecretsKey::from_bytes(&[7; 32]).ok();
        let other = SecretsKey::from_bytes(&[8; 32]).ok();
        let (Some(key), Some(other)) = (key, other) else {
            panic!("32-byte keys are valid");
        };
        let sealed = key.seal(b"hunter2hunter2hunter2", b"trigger-1").ok();
        let sealed = sealed.unwrap_or_default();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            key.open(&sealed, b"trigger-1").ok().as_deref(),
            Some(&b"hunter2hunter2hunter2"[..])
        );
        assert!(key.open(&sealed, b"trigger-2").is_err());
        assert!(other.open(&sealed, b"trigger-1").is_err());
        assert!(SecretsKey::from_base64("c2hvcnQ=").is_err());
        assert!(format!("{key:?}").contains("***"));
        let digest = key.keyed_digest("a", b"data");
        assert_eq!(digest, key.keyed_digest("a", b"data"));
        assert_ne!(digest, key.keyed_digest("b", b"data"));
        assert_ne!(digest, other.keyed_digest("a", b"data"));
    }
}
