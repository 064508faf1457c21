//! Bearer JWTs: verification against pinned keys chosen by `kid`, and HS256 issuing for
//! `slipway token issue`.
//!
//! Each key carries the one algorithm it is for (HS256 for the shared secret, RS256 for an RSA
//! public key, ES256 for a P-256 public key): a token whose header names another algorithm is
//! refused, so a token "signed" with HS256 using a public RSA key as the secret (key
//! confusion) and `alg: none` never verify. `exp`, `iss`, `aud` and `sub` are required, `nbf`
//! is honoured, and both clocks get 60 s of leeway.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;

/// Shortest accepted HS256 secret, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_LEN: usize = 32;

/// A key that cannot be used; the message says why.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the HS256 secret must be at least {MIN_SECRET_LEN} bytes")]
    ShortSecret,
    #[error("key {kid:?}: {message}")]
    Unusable { kid: String, message: String },
    #[error("the JWKS document is not valid: {0}")]
    Jwks(String),
    #[error("key id {0:?} is configured twice")]
    DuplicateKid(String),
    #[error("signing the token failed: {0}")]
    Signing(String),
}

/// Why a token was refused. The messages go to the client: they say what is wrong with the
/// token, never anything about the keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed or uses an algorithm that is not accepted")]
    Malformed,
    #[error("the token's algorithm is not the one of its key")]
    WrongAlgorithm,
    #[error("the token's key id (kid) is not known")]
    UnknownKey,
    #[error("the token has no key id (kid) and no shared secret is configured")]
    NoKeyId,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token is not for this audience (aud)")]
    WrongAudience,
    #[error("the token is from an issuer that is not trusted (iss)")]
    WrongIssuer,
    #[error("the token lacks the required claim {0:?}")]
    MissingClaim(String),
    #[error("the token's subject (sub) is empty")]
    EmptySubject,
}

/// The claims Slipway reads; `exp`, `iss`, `aud` and `nbf` are checked by the verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Expiry, in seconds since the Unix epoch (required).
    pub exp: u64,
}

#[derive(Clone)]
struct VerifyingKey {
    key: DecodingKey,
    validation: Validation,
}

/// The keys tokens are verified with, and the issuer and audience they must name.
#[derive(Clone)]
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    secret: Option<VerifyingKey>,
    by_kid: HashMap<String, VerifyingKey>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.by_kid.keys().collect();
        kids.sort();
        f.debug_struct("TokenVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("kids", &kids)
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier without keys (add some: one without keys refuses every token).
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            secret: None,
            by_kid: HashMap::new(),
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_exp = true;
        v.validate_nbf = true;
        v.leeway = LEEWAY_SECS;
        v
    }

    /// Adds the HS256 shared secret; it verifies tokens that carry no `kid`.
    pub fn with_secret(mut self, secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::ShortSecret);
        }
        let key = DecodingKey::from_secret(secret).map_err(|_| KeyError::ShortSecret)?;
        self.secret = Some(VerifyingKey {
            key,
            validation: self.validation(Algorithm::HS256),
        });
        Ok(self)
    }

    /// Adds a PEM public key under `kid`: RSA (RS256) or P-256 EC (ES256).
    pub fn with_pem(mut self, kid: &str, pem: &[u8]) -> Result<Self, KeyError> {
        let (key, alg) = match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => (key, Algorithm::RS256),
            Err(_) => match DecodingKey::from_ec_pem(pem) {
                Ok(key) => (key, Algorithm::ES256),
                Err(e) => {
                    return Err(KeyError::Unusable {
                        kid: kid.to_owned(),
                        message: format!("not an RSA or EC public key in PEM form: {e}"),
                    });
                }
            },
        };
        self.insert(kid, key, alg)?;
        Ok(self)
    }

    /// Adds every key of a JWKS document (RFC 7517). Each needs a `kid`; RSA keys verify
    /// RS256, P-256 keys ES256; any other key is refused rather than skipped, so a typo does
    /// not silently leave a key out.
    pub fn with_jwks(mut self, document: &str) -> Result<Self, KeyError> {
        let set: JwkSet =
            serde_json::from_str(document).map_err(|e| KeyError::Jwks(e.to_string()))?;
        for jwk in &set.keys {
            let kid = jwk.common.key_id.clone().ok_or_else(|| {
                KeyError::Jwks("every key needs a \"kid\" to be selected by".into())
            })?;
            let unusable = |message: &str| KeyError::Unusable {
                kid: kid.clone(),
                message: message.to_owned(),
            };
            let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                    if p.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => {
                    return Err(unusable(
                        "only RSA (RS256) and P-256 (ES256) keys are accepted",
                    ));
                }
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| unusable(&e.to_string()))?;
            self.insert(&kid, key, alg)?;
        }
        Ok(self)
    }

    fn insert(&mut self, kid: &str, key: DecodingKey, alg: Algorithm) -> Result<(), KeyError> {
        if self.by_kid.contains_key(kid) {
            return Err(KeyError::DuplicateKid(kid.to_owned()));
        }
        let validation = self.validation(alg);
        self.by_kid
            .insert(kid.to_owned(), VerifyingKey { key, validation });
        Ok(())
    }

    /// Whether no key at all is configured.
    pub fn is_empty(&self) -> bool {
        self.secret.is_none() && self.by_kid.is_empty()
    }

    /// The key ids this verifier knows.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.by_kid.keys().cloned().collect();
        kids.sort();
        kids
    }

    /// Verifies `token` and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let key = match &header.kid {
            Some(kid) => self.by_kid.get(kid).ok_or(TokenError::UnknownKey)?,
            None => self.secret.as_ref().ok_or(TokenError::NoKeyId)?,
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::WrongAlgorithm
                }
                ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim.clone()),
                _ => TokenError::Malformed,
            },
        )?;
        if data.claims.sub.trim().is_empty() {
            return Err(TokenError::EmptySubject);
        }
        Ok(data.claims)
    }
}

/// Everything an issued token says.
#[derive(Debug, Serialize)]
struct IssuedClaims<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    groups: &'a [String],
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// An HS256 token for `sub` (and `groups`), valid for `ttl` from now, without a `kid` (the
/// shared secret verifies kid-less tokens).
pub fn issue_hs256(
    secret: &[u8],
    issuer: &str,
    audience: &str,
    sub: &str,
    groups: &[String],
    ttl: Duration,
) -> Result<String, KeyError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(KeyError::ShortSecret);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = IssuedClaims {
        sub,
        groups,
        iss: issuer,
        aud: audience,
        iat: now,
        nbf: now,
        exp: now.saturating_add(ttl.as_secs()),
    };
    let key = EncodingKey::from_secret(secret).map_err(|e| KeyError::Signing(e.to_string()))?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .map_err(|e| KeyError::Signing(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn an_issued_token_verifies_with_its_groups() {
        let verifier = TokenVerifier::new("slipway", "slipway")
            .with_secret(SECRET)
            .ok();
        let groups = vec!["ops".to_owned()];
        let token = issue_hs256(
            SECRET,
            "slipway",
            "slipway",
            "alice",
            &groups,
            Duration::from_secs(60),
        )
        .ok();
        let claims = verifier.zip(token).map(|(v, t)| v.verify(&t));
        let read = claims.map(|c| c.map(|c| (c.sub, c.groups)));
        assert_eq!(read, Some(Ok(("alice".to_owned(), groups))));
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(matches!(
            TokenVerifier::new("a", "b").with_secret(b"short"),
            Err(KeyError::ShortSecret)
        ));
    }

    #[test]
    fn a_foreign_issuer_or_audience_is_refused() {
        let Ok(verifier) = TokenVerifier::new("slipway", "slipway").with_secret(SECRET) else {
            panic!("a valid secret");
        };
        let ttl = Duration::from_secs(60);
        let other_iss = issue_hs256(SECRET, "evil", "slipway", "a", &[], ttl).unwrap_or_default();
        let other_aud = issue_hs256(SECRET, "slipway", "evil", "a", &[], ttl).unwrap_or_default();
        assert_eq!(verifier.verify(&other_iss), Err(TokenError::WrongIssuer));
        assert_eq!(verifier.verify(&other_aud), Err(TokenError::WrongAudience));
    }
}
