//! Console sessions and CSRF tokens, with no server-side state.
//!
//! Signing in exchanges one of the read API's tokens (`api.tokens`) for a session
//! cookie: `<session id>.<expiry>.<MAC>`, the MAC an HMAC-SHA256 under a key derived
//! from that token. Every replica with the same tokens accepts it, a restart keeps it,
//! and removing the token from `api.tokens` ends every session made with it. A
//! session's CSRF token is the HMAC of its id under the same key; forms carry it and
//! every POST is refused (403) without it. Both are compared in constant time.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::{ConsoleSettings, SecureCookie};
use crate::http::read_api::{ApiTokens, constant_time_position};

/// The session cookie.
pub const SESSION_COOKIE: &str = "sas_console";
/// The sign-in form's own CSRF cookie (double submit: the form and the cookie must agree).
pub const SIGN_IN_COOKIE: &str = "sas_console_sign_in";
/// How long a sign-in form may be left open.
const SIGN_IN_FORM_SECONDS: u64 = 600;

type HmacSha256 = Hmac<Sha256>;

/// The console's session keys (one per API token) and cookie settings.
#[derive(Clone)]
pub struct Sessions {
    keys: Arc<Vec<[u8; 32]>>,
    lifetime: Duration,
    secure: SecureCookie,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sessions([{} keys redacted])", self.keys.len())
    }
}

/// A valid session: its id and which token's key signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    id: String,
    key: usize,
}

impl Sessions {
    pub fn new(tokens: &ApiTokens, settings: &ConsoleSettings) -> Sessions {
        let keys = tokens.digests().iter().map(|digest| mac(digest, &[b"seam-access-sync console session key v1"]));
        Sessions {
            keys: Arc::new(keys.collect()),
            lifetime: settings.session_lifetime(),
            secure: settings.secure_cookie,
        }
    }

    /// Whether `presented` is one of the tokens: a new session for it, and its cookie value.
    pub fn sign_in(&self, tokens: &ApiTokens, presented: &str, now: i64) -> Option<(Session, String)> {
        let key = tokens.position(presented.trim())?;
        let id = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        let expires = now.saturating_add(self.lifetime.as_secs() as i64);
        let tag = URL_SAFE_NO_PAD.encode(self.session_mac(key, &id, expires));
        let value = format!("{id}.{expires}.{tag}");
        Some((Session { id, key }, value))
    }

    /// The session a cookie value stands for, while it has not expired.
    pub fn verify(&self, value: &str, now: i64) -> Option<Session> {
        let mut parts = value.split('.');
        let (id, expires, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || id.len() != 22 {
            return None;
        }
        let expires: i64 = expires.parse().ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if expires <= now {
            return None;
        }
        // Every key is tried, so timing tells nothing about which one signed it.
        let macs: Vec<[u8; 32]> = (0..self.keys.len()).map(|key| self.session_mac(key, id, expires)).collect();
        let key = constant_time_position(&macs, &tag)?;
        Some(Session { id: id.to_owned(), key })
    }

    /// The CSRF token of `session`, for its forms.
    pub fn csrf_token(&self, session: &Session) -> String {
        URL_SAFE_NO_PAD.encode(mac(&self.keys[session.key], &[b"csrf", session.id.as_bytes()]))
    }

    /// Whether a form's `presented` token is `session`'s.
    pub fn csrf_ok(&self, session: &Session, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(self.csrf_token(session).as_bytes())))
    }

    fn session_mac(&self, key: usize, id: &str, expires: i64) -> [u8; 32] {
        mac(&self.keys[key], &[b"session", id.as_bytes(), expires.to_string().as_bytes()])
    }

    /// Whether the cookies set for this request carry `Secure` (`console.secure_cookie`):
    /// "auto" decides by `X-Forwarded-Proto`, which the TLS terminator sets.
    pub fn secure_for(&self, headers: &HeaderMap) -> bool {
        match self.secure {
            SecureCookie::Always => true,
            SecureCookie::Never => false,
            SecureCookie::Auto => headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https")),
        }
    }

    /// `Set-Cookie` for a session cookie: HttpOnly, SameSite=Strict, the console's
    /// path, the session's lifetime, and Secure as `secure_for` decided.
    pub fn session_cookie(&self, value: &str, secure: bool) -> String {
        cookie(SESSION_COOKIE, value, self.lifetime.as_secs(), secure)
    }

    /// `Set-Cookie` ending the session in the browser.
    pub fn ended_cookie(&self, secure: bool) -> String {
        cookie(SESSION_COOKIE, "", 0, secure)
    }

    /// `Set-Cookie` of the sign-in form's CSRF value.
    pub fn sign_in_cookie(&self, value: &str, secure: bool) -> String {
        cookie(SIGN_IN_COOKIE, value, SIGN_IN_FORM_SECONDS, secure)
    }
}

/// A fresh random value for the sign-in form's CSRF cookie and field.
pub fn sign_in_nonce() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// Whether the sign-in form's field and cookie agree (constant time).
pub fn sign_in_nonce_ok(cookie: Option<&str>, field: Option<&str>) -> bool {
    match (cookie, field) {
        (Some(cookie), Some(field)) if !cookie.is_empty() => cookie.as_bytes().ct_eq(field.as_bytes()).into(),
        _ => false,
    }
}

fn cookie(name: &str, value: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn request_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        // Length-prefixed, so that no two different lists of parts read the same.
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    const TOKEN_A: &str = "console-token-a-0123456789abcdef0123456789";
    const TOKEN_B: &str = "console-token-b-0123456789abcdef0123456789";

    fn sessions(tokens: &[&str]) -> (Sessions, ApiTokens) {
        let tokens = ApiTokens::new(&tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>()).unwrap();
        let settings = Settings::from_toml(&[]).unwrap();
        (Sessions::new(&tokens, &settings.console), tokens)
    }

    #[test]
    fn a_session_is_valid_until_it_expires_and_only_with_its_token_configured() {
        let (sessions, tokens) = sessions(&[TOKEN_A, TOKEN_B]);
        assert!(sessions.sign_in(&tokens, "wrong-token-0123456789abcdef0123456789", 1000).is_none());
        let (session, value) = sessions.sign_in(&tokens, TOKEN_B, 1000).unwrap();
        assert_eq!(sessions.verify(&value, 1000 + 8 * 3600 - 1), Some(session.clone()));
        assert_eq!(sessions.verify(&value, 1000 + 8 * 3600), None, "expired");
        // The token removed from api.tokens: its sessions end.
        let (only_a, _) = self::sessions(&[TOKEN_A]);
        assert_eq!(only_a.verify(&value, 1000), None);
        // Tampered: another expiry, another id, garbage.
        let (id, rest) = value.split_once('.').unwrap();
        let (_, tag) = rest.split_once('.').unwrap();
        for forged in
            [format!("{id}.999999999999.{tag}"), format!("AAAAAAAAAAAAAAAAAAAAAA.{rest}"), "x".into(), String::new()]
        {
            assert_eq!(sessions.verify(&forged, 1000), None, "{forged}");
        }
    }

    #[test]
    fn the_csrf_token_belongs_to_its_session() {
        let (sessions, tokens) = sessions(&[TOKEN_A]);
        let (one, _) = sessions.sign_in(&tokens, TOKEN_A, 0).unwrap();
        let (two, _) = sessions.sign_in(&tokens, TOKEN_A, 0).unwrap();
        let token = sessions.csrf_token(&one);
        assert!(sessions.csrf_ok(&one, Some(&token)));
        assert!(!sessions.csrf_ok(&two, Some(&token)));
        assert!(!sessions.csrf_ok(&one, None));
        assert!(!sessions.csrf_ok(&one, Some("")));
        assert!(!sign_in_nonce_ok(None, Some("a")) && !sign_in_nonce_ok(Some(""), Some("")));
        assert!(sign_in_nonce_ok(Some("abc"), Some("abc")) && !sign_in_nonce_ok(Some("abc"), Some("abd")));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_as_decided() {
        let (sessions, _) = sessions(&[TOKEN_A]);
        assert_eq!(
            sessions.session_cookie("v", false),
            "sas_console=v; Path=/console; Max-Age=28800; HttpOnly; SameSite=Strict"
        );
        assert!(sessions.session_cookie("v", true).ends_with("; Secure"));
        let mut headers = HeaderMap::new();
        assert!(!sessions.secure_for(&headers));
        headers.insert("x-forwarded-proto", "HTTPS, http".parse().unwrap());
        assert!(sessions.secure_for(&headers));
        headers.insert(axum::http::header::COOKIE, "a=1; sas_console=x.y.z".parse().unwrap());
        assert_eq!(request_cookie(&headers, SESSION_COOKIE), Some("x.y.z"));
        assert_eq!(request_cookie(&headers, SIGN_IN_COOKIE), None);
    }
}
