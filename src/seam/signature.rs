//! Svix / Standard Webhooks signatures: `v1,base64(HMAC-SHA256(key, "{id}.{ts}.{body}"))`.
//!
//! Verification runs on the raw body bytes, before anything is parsed.

use std::fmt;

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::{DecodePaddingMode, general_purpose};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Secrets are accepted with or without their `=` padding (the Python reference
/// library does the same; a secret copied without its padding still works).
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest signature header we look at; Svix sends one entry per active secret.
const MAX_SIGNATURE_HEADER_BYTES: usize = 4096;
/// Longest message id we accept (Svix ids are about 30 characters).
const MAX_MESSAGE_ID_BYTES: usize = 256;

/// One or more webhook signing keys; any of them may have signed a delivery.
#[derive(Clone)]
pub struct WebhookSecrets(Vec<Vec<u8>>);

impl fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookSecrets([{} redacted])", self.0.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("missing")]
    Missing,
    #[error("malformed: secret #{0} is empty")]
    Empty(usize),
    #[error("malformed: secret #{0} is not `whsec_` followed by base64")]
    Malformed(usize),
}

impl WebhookSecrets {
    /// No secret: verifies nothing (for a process that serves no webhooks).
    pub fn none() -> WebhookSecrets {
        WebhookSecrets(Vec::new())
    }

    /// Parses one or more `whsec_<base64>` secrets (prefix optional), separated by
    /// spaces or commas.
    pub fn parse(list: &str) -> Result<WebhookSecrets, SecretError> {
        let keys = list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(i, secret)| match decode_secret(secret) {
                Some(key) if key.is_empty() => Err(SecretError::Empty(i + 1)),
                Some(key) => Ok(key),
                None => Err(SecretError::Malformed(i + 1)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(SecretError::Missing);
        }
        Ok(WebhookSecrets(keys))
    }
}

/// The secret of the public Standard Webhooks / Svix test vectors: anyone can sign with it.
pub const PUBLIC_TEST_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

impl WebhookSecrets {
    /// The shortest key: its number (from 1) and its length in bytes.
    pub fn shortest(&self) -> Option<(usize, usize)> {
        self.0.iter().enumerate().map(|(i, key)| (i + 1, key.len())).min_by_key(|(_, len)| *len)
    }

    pub fn includes_public_test_secret(&self) -> bool {
        let public = decode_secret(PUBLIC_TEST_SECRET).expect("the public test secret decodes");
        self.0.contains(&public)
    }
}

fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    LENIENT_BASE64.decode(encoded).ok()
}

/// Which events a secret may sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretScope {
    /// `SEAM_WEBHOOK_SECRET`: any workspace's.
    AnyWorkspace,
    /// A `[[workspaces]]` entry's `webhook_secret` (its index): that workspace's only.
    Workspace(usize),
}

/// Where the sender said a delivery came from, once its signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDelivery {
    /// `svix-id` / `webhook-id`: the same on every retry of one message.
    pub message_id: String,
    /// The scope of the secret that signed it.
    pub scope: SecretScope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("malformed {0} header")]
    MalformedHeader(&'static str),
    #[error("timestamp is older than the tolerance")]
    TimestampTooOld,
    #[error("timestamp is further in the future than the tolerance")]
    TimestampInFuture,
    #[error("no signature matches")]
    NoMatchingSignature,
}

impl VerifyError {
    /// A stable machine-readable name, used in responses and logs.
    pub fn code(self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_header",
            VerifyError::MalformedHeader(_) => "malformed_header",
            VerifyError::TimestampTooOld => "timestamp_too_old",
            VerifyError::TimestampInFuture => "timestamp_in_future",
            VerifyError::NoMatchingSignature => "invalid_signature",
        }
    }

    /// Missing or unreadable headers are the sender's malformed request; a
    /// well-formed request that fails authentication is unauthorized.
    pub fn is_malformed(self) -> bool {
        matches!(self, VerifyError::MissingHeader(_) | VerifyError::MalformedHeader(_))
    }
}

#[derive(Clone)]
pub struct Verifier {
    /// Each secret as an HMAC already keyed with it: keying costs two SHA-256
    /// blocks, paid once here instead of on every delivery.
    keys: Vec<(HmacSha256, SecretScope)>,
    tolerance_seconds: i64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier([{} redacted], {} s)", self.keys.len(), self.tolerance_seconds)
    }
}

impl Verifier {
    /// Secrets that verify any workspace's events.
    pub fn new(secrets: WebhookSecrets, tolerance_seconds: u64) -> Verifier {
        Verifier::scoped(vec![(SecretScope::AnyWorkspace, secrets)], tolerance_seconds)
    }

    /// Groups of secrets, each with the events it may sign.
    pub fn scoped(groups: Vec<(SecretScope, WebhookSecrets)>, tolerance_seconds: u64) -> Verifier {
        let keys = groups
            .into_iter()
            .flat_map(|(scope, secrets)| secrets.0.into_iter().map(move |key| (keyed_mac(&key), scope)));
        Verifier { keys: keys.collect(), tolerance_seconds: i64::try_from(tolerance_seconds).unwrap_or(i64::MAX) }
    }

    /// Checks headers and raw body against the secrets at the unix time `now`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<VerifiedDelivery, VerifyError> {
        let message_id = header(headers, "id")?;
        let timestamp_text = header(headers, "timestamp")?;
        let signatures = header(headers, "signature")?;
        if message_id.is_empty() || message_id.len() > MAX_MESSAGE_ID_BYTES {
            return Err(VerifyError::MalformedHeader("svix-id"));
        }
        if signatures.len() > MAX_SIGNATURE_HEADER_BYTES {
            return Err(VerifyError::MalformedHeader("svix-signature"));
        }
        let timestamp = parse_timestamp(timestamp_text)?;
        if now.saturating_sub(timestamp) > self.tolerance_seconds {
            return Err(VerifyError::TimestampTooOld);
        }
        if timestamp.saturating_sub(now) > self.tolerance_seconds {
            return Err(VerifyError::TimestampInFuture);
        }

        let candidates: Vec<Vec<u8>> = signatures
            .split(' ')
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .filter_map(|(_, signature)| STANDARD.decode(signature).ok())
            .collect();
        let matched = self.keys.iter().find(|(keyed, _)| {
            let mac = signed_content_mac(keyed.clone(), message_id, timestamp_text, body);
            // `verify_slice` compares in constant time and fails on a length mismatch,
            // so `v1,` or a truncated signature never passes.
            candidates.iter().any(|candidate| mac.clone().verify_slice(candidate).is_ok())
        });
        let Some((_, scope)) = matched else {
            return Err(VerifyError::NoMatchingSignature);
        };
        Ok(VerifiedDelivery { message_id: message_id.to_owned(), scope: *scope })
    }
}

/// Signs like Svix does: `v1,<base64 mac>`. Used by tests, the demo and the
/// benchmarks; the service itself only verifies.
pub fn sign(secret: &str, message_id: &str, timestamp: i64, body: &[u8]) -> Result<String, SecretError> {
    let key = decode_secret(secret).filter(|key| !key.is_empty()).ok_or(SecretError::Malformed(1))?;
    let mac = signed_content_mac(keyed_mac(&key), message_id, &timestamp.to_string(), body);
    Ok(format!("v1,{}", general_purpose::STANDARD.encode(mac.finalize().into_bytes())))
}

fn keyed_mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// `mac`, keyed (`keyed_mac`, or a clone of one), over Svix's signed content: `{id}.{timestamp}.{body}`.
fn signed_content_mac(mut mac: HmacSha256, message_id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `svix-{name}` if present, else `webhook-{name}` (`HeaderMap` is case-insensitive).
fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, VerifyError> {
    let (svix, standard) = match name {
        "id" => ("svix-id", "webhook-id"),
        "timestamp" => ("svix-timestamp", "webhook-timestamp"),
        _ => ("svix-signature", "webhook-signature"),
    };
    let value = headers.get(svix).or_else(|| headers.get(standard)).ok_or(VerifyError::MissingHeader(svix))?;
    value.to_str().map_err(|_| VerifyError::MalformedHeader(svix))
}

/// Unix seconds: ASCII digits only (no sign, no fraction), at most 12 of them.
fn parse_timestamp(text: &str) -> Result<i64, VerifyError> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::MalformedHeader("svix-timestamp"));
    }
    text.parse().map_err(|_| VerifyError::MalformedHeader("svix-timestamp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_keys() {
        let secrets = WebhookSecrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(format!("{secrets:?}"), "WebhookSecrets([1 redacted])");
    }

    #[test]
    fn secrets_may_be_separated_by_commas_or_spaces() {
        let list = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        assert_eq!(WebhookSecrets::parse(list).unwrap().0.len(), 2);
        assert_eq!(WebhookSecrets::parse("  ,").unwrap_err(), SecretError::Missing);
        assert_eq!(
            WebhookSecrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw !!").unwrap_err(),
            SecretError::Malformed(2)
        );
    }

    /// The keyed HMAC is cloned per delivery: one delivery's content must not leak
    /// into the next one's MAC, whichever of two secrets signed it.
    #[test]
    fn one_verifier_checks_delivery_after_delivery() {
        let (first, second) = (PUBLIC_TEST_SECRET, "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        let verifier = Verifier::new(WebhookSecrets::parse(&format!("{first},{second}")).unwrap(), 300);
        let now = 1_700_000_000;
        let headers = |id: &str, signature: String| {
            let mut headers = HeaderMap::new();
            headers.insert("svix-id", id.parse().unwrap());
            headers.insert("svix-timestamp", now.to_string().parse().unwrap());
            headers.insert("svix-signature", signature.parse().unwrap());
            headers
        };
        for (i, secret) in [first, second, first, second, first].into_iter().enumerate() {
            let (id, body) = (format!("msg_{i}"), format!("{{\"n\":{i}}}"));
            let signed = headers(&id, sign(secret, &id, now, body.as_bytes()).unwrap());
            assert_eq!(verifier.verify(&signed, body.as_bytes(), now).unwrap().message_id, id);
            let other_body = format!("{{\"n\":{}}}", i + 1);
            assert_eq!(
                verifier.verify(&signed, other_body.as_bytes(), now).unwrap_err(),
                VerifyError::NoMatchingSignature
            );
        }
    }
}
