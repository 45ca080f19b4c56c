//! The test secrets and the signer. Signatures are made with the independent
//! `standardwebhooks` crate, not with the verifier's own code, so a test delivery
//! proves the service verifies what another implementation signs.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};

/// The webhook secret every suite's service runs with (unless a test says otherwise).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The second secret of a rotation.
pub const NEW_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// `v1,<base64>` as Svix signs `{msg_id}.{timestamp}.{body}` with `secret`.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    if std::str::from_utf8(body).is_err() {
        // `standardwebhooks` signs text only; hostile tests send other bytes.
        return sign_text(secret, msg_id, &timestamp.to_string(), body);
    }
    standardwebhooks::Webhook::new(secret)
        .unwrap_or_else(|e| panic!("the secret {secret} is not a Standard Webhooks secret: {e}"))
        .sign(msg_id, timestamp, body)
        .expect("a UTF-8 body signs")
}

/// The same signature over a timestamp *text* that may not be a plain number
/// (`"  1795000000\t"`), and over any bytes: what only hostile tests send.
pub fn sign_text(secret: &str, msg_id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret)).expect("a base64 secret");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes any key");
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Svix's three headers for `body` delivered as `msg_id` at `timestamp`.
pub fn svix_headers(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> [(&'static str, String); 3] {
    [
        ("svix-id", msg_id.to_owned()),
        ("svix-timestamp", timestamp.to_string()),
        ("svix-signature", sign(secret, msg_id, timestamp, body)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways_of_signing_agree() {
        let body = br#"{"event_id":"e1"}"#;
        assert_eq!(sign(SECRET, "msg_1", 1_795_000_000, body), sign_text(SECRET, "msg_1", "1795000000", body));
        assert_ne!(sign(SECRET, "msg_1", 1_795_000_000, body), sign(NEW_SECRET, "msg_1", 1_795_000_000, body));
    }
}
