//! Checking webhook signatures over the raw body, in constant time, before anything parses it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// How far a Standard Webhooks timestamp may be from now, either way.
pub(crate) const TOLERANCE_SECS: u64 = 300;

fn mac(key: &[u8]) -> Option<HmacSha256> {
    <HmacSha256 as KeyInit>::new_from_slice(key).ok()
}

/// GitHub's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` under `secret`.
pub(crate) fn github(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(expected) = header.strip_prefix("sha256=").and_then(decode_hex) else {
        return false;
    };
    let Some(mut mac) = mac(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// SHA-256 of a delivery's event name and signed body: what identifies a delivery whose id
/// is not signed (GitHub's `X-GitHub-Delivery`), so that a captured delivery resent under a
/// new id is known for the redelivery it is.
pub(crate) fn content_digest(event: &str, body: &[u8]) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(event.as_bytes());
    digest.update([0]);
    digest.update(body);
    digest.finalize().into()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A shared token compared in constant time (of the token's length too: digests are compared).
pub(crate) fn token(secret: &[u8], sent: &[u8]) -> bool {
    let a = Sha256::digest(secret);
    let b = Sha256::digest(sent);
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// The Standard Webhooks headers of a delivery.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StandardHeaders<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

/// [`StandardHeaders`] owned, to check on another thread.
#[derive(Debug, Clone)]
pub(crate) struct OwnedStandardHeaders {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
}

impl StandardHeaders<'_> {
    pub(crate) fn owned(&self) -> OwnedStandardHeaders {
        OwnedStandardHeaders {
            id: self.id.to_owned(),
            timestamp: self.timestamp.to_owned(),
            signature: self.signature.to_owned(),
        }
    }
}

impl OwnedStandardHeaders {
    pub(crate) fn borrowed(&self) -> StandardHeaders<'_> {
        StandardHeaders {
            id: &self.id,
            timestamp: &self.timestamp,
            signature: &self.signature,
        }
    }
}

/// Why a Standard Webhooks delivery is refused before its signature is checked (a signature
/// that does not match is [`standard`] answering `false`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StandardFailure {
    /// `webhook-timestamp` is not an integer, or is more than 5 minutes from `now`.
    Timestamp,
}

/// Checks the timestamp window: Unix seconds within [`TOLERANCE_SECS`] of `now`.
pub(crate) fn standard_timestamp(
    headers: &StandardHeaders<'_>,
    now: i64,
) -> Result<(), StandardFailure> {
    let ts: i64 = headers
        .timestamp
        .trim()
        .parse()
        .map_err(|_| StandardFailure::Timestamp)?;
    // The sender's number, read before any signature is checked: `abs_diff` cannot
    // overflow whatever it is (`(now - ts).abs()` panics in debug builds, wraps in release).
    if now.abs_diff(ts) > TOLERANCE_SECS {
        return Err(StandardFailure::Timestamp);
    }
    Ok(())
}

/// Standard Webhooks: `webhook-signature` lists space-separated `v1,<base64>` signatures, each
/// an HMAC-SHA256 under `key` of `{webhook-id}.{webhook-timestamp}.{body}`.
pub(crate) fn standard(key: &[u8], headers: &StandardHeaders<'_>, body: &[u8]) -> bool {
    let Some(mut base) = mac(key) else {
        return false;
    };
    base.update(headers.id.as_bytes());
    base.update(b".");
    base.update(headers.timestamp.as_bytes());
    base.update(b".");
    base.update(body);
    headers
        .signature
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|sig| base.clone().verify_slice(&sig).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signs like a Standard Webhooks sender.
    fn standard_sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
        let Some(mut m) = mac(key) else {
            return String::new();
        };
        m.update(format!("{id}.{timestamp}.").as_bytes());
        m.update(body);
        format!("v1,{}", STANDARD.encode(m.finalize().into_bytes()))
    }

    #[test]
    fn github_signature_of_the_documented_example() {
        // GitHub's docs: secret "It's a Secret to Everybody", payload "Hello, World!".
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(github(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            header
        ));
        assert!(!github(
            b"It's a Secret to Everybody",
            b"Hello, World?",
            header
        ));
        assert!(!github(b"another secret", b"Hello, World!", header));
        assert!(!github(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            "sha1=757107"
        ));
    }

    #[test]
    fn standard_webhooks_round_trip_and_window() {
        let key = [3u8; 32];
        let sig = standard_sign(&key, "msg_1", 1_700_000_000, b"{}");
        let headers = StandardHeaders {
            id: "msg_1",
            timestamp: "1700000000",
            signature: &format!("v1,bm90IGl0 {sig}"),
        };
        assert!(standard(&key, &headers, b"{}"));
        assert!(!standard(&key, &headers, b"{ }"));
        assert!(standard_timestamp(&headers, 1_700_000_000 + 299).is_ok());
        assert!(standard_timestamp(&headers, 1_700_000_000 - 301).is_err());
        assert!(standard_timestamp(&headers, 1_700_000_000 + 301).is_err());
    }

    #[test]
    fn extreme_timestamps_are_outside_the_window_not_a_panic() {
        // The timestamp is the sender's, read before any signature is checked.
        let now = 1_700_000_000;
        for ts in [i64::MIN, i64::MIN + 1, -1, i64::MAX] {
            let text = ts.to_string();
            let headers = StandardHeaders {
                id: "msg_1",
                timestamp: &text,
                signature: "v1,AAAA",
            };
            assert_eq!(
                standard_timestamp(&headers, now),
                Err(StandardFailure::Timestamp),
                "{ts}"
            );
        }
        let headers = StandardHeaders {
            id: "msg_1",
            timestamp: "1700000000",
            signature: "v1,AAAA",
        };
        assert_eq!(
            standard_timestamp(&headers, i64::MIN),
            Err(StandardFailure::Timestamp)
        );
        assert_eq!(
            standard_timestamp(&headers, i64::MAX),
            Err(StandardFailure::Timestamp)
        );
    }

    #[test]
    fn tokens() {
        assert!(token(b"abc", b"abc"));
        assert!(!token(b"abc", b"abd"));
        assert!(!token(b"abc", b"abcd"));
    }
}
