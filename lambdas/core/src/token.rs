//! Connection tokens: `v1.<claims>.<signature>`, both parts base64url without padding, the
//! signature an HMAC-SHA256 of `v1.<claims>` under the stage's secret. Claims name the user, the
//! expiry and optionally the rooms the holder may enter and whether it is an operator.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::{RoomName, UserName};

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "v1";

/// What a token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user name.
    pub sub: UserName,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    #[serde(default)]
    pub iat: i64,
    /// Rooms the holder may enter; absent means any room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<BTreeSet<RoomName>>,
    /// Operators may recall any message at any time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub op: bool,
}

/// Why a token was refused. Shown to the client in the refused upgrade's body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token signature does not match this server's secret")]
    BadSignature,
    #[error("token expired at {expired_at} (now {now}); mint a new one with `chatctl token`")]
    Expired { expired_at: i64, now: i64 },
}

/// The secret that signs and checks tokens.
#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl TokenKey {
    /// Shortest secret accepted, in bytes.
    pub const MIN_LEN: usize = 16;

    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, TokenError> {
        let secret = secret.into();
        if secret.len() < Self::MIN_LEN {
            return Err(TokenError::Malformed(format!(
                "secret must be at least {} bytes",
                Self::MIN_LEN
            )));
        }
        Ok(Self(secret))
    }

    #[allow(clippy::expect_used)]
    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length: `new_from_slice` only fails for fixed-size-key MACs.
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }

    pub fn mint(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let body = format!("{VERSION}.{}", URL_SAFE_NO_PAD.encode(payload));
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{body}.{sig}")
    }

    /// Check a token's signature and expiry at `now_secs`.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(version), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "expected three dot-separated parts".into(),
            ));
        };
        if version != VERSION {
            return Err(TokenError::Malformed(format!(
                "unknown token version {:?}",
                version.chars().take(8).collect::<String>()
            )));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed("signature is not base64url".into()))?;
        // Both parts' encoding is checked before the signature, so a mangled token is reported
        // as malformed (401) whatever its signature; the claims are parsed only once signed.
        let claims_json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed("claims are not base64url".into()))?;
        let mut mac = self.mac();
        mac.update(version.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let payload = claims_json;
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
        if claims.exp <= now_secs {
            return Err(TokenError::Expired {
                expired_at: claims.exp,
                now: now_secs,
            });
        }
        Ok(claims)
    }
}

/// Lowercase hex of `bytes`: how secrets are stored (a file locally, an SSM parameter on AWS).
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a hex string (surrounding white space ignored); `None` if it is not hex.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::new(b"0123456789abcdef0123".to_vec()).unwrap()
    }

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: UserName::parse("ann").unwrap(),
            exp,
            iat: 0,
            rooms: Some([RoomName::parse("lobby").unwrap()].into()),
            op: false,
        }
    }

    #[test]
    fn minted_tokens_verify() {
        let token = key().mint(&claims(100));
        assert!(token.starts_with("v1."));
        assert_eq!(key().verify(&token, 99).unwrap(), claims(100));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let token = key().mint(&claims(100));
        assert!(matches!(
            key().verify(&token, 100),
            Err(TokenError::Expired {
                expired_at: 100,
                ..
            })
        ));
    }

    #[test]
    fn forged_tokens_are_refused() {
        let token = key().mint(&claims(100));
        let other = TokenKey::new(b"another-secret-of-20b".to_vec()).unwrap();
        assert_eq!(other.verify(&token, 1), Err(TokenError::BadSignature));

        // Swap the claims for an operator's, keep the signature.
        let mut forged = claims(100);
        forged.op = true;
        let forged_payload = key().mint(&forged);
        let sig = token.rsplit('.').next().unwrap();
        let body = forged_payload.rsplit_once('.').unwrap().0;
        assert_eq!(
            key().verify(&format!("{body}.{sig}"), 1),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for garbage in ["", "v1", "v1.a", "v1.a.b.c", "v2.a.b", "v1.!!.??", "..."] {
            assert!(
                matches!(key().verify(garbage, 1), Err(TokenError::Malformed(_))),
                "{garbage}"
            );
        }
    }

    #[test]
    fn empty_signature_is_refused() {
        assert_eq!(key().verify("v1..", 1), Err(TokenError::BadSignature));
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        assert_eq!(encode_hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(decode_hex(" 00abff\n"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex("é1"), None);
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(TokenKey::new(b"short".to_vec()).is_err());
    }
}
