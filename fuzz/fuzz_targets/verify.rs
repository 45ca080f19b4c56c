//! `Verifier::verify` on arbitrary headers and bodies, and on honestly signed
//! deliveries with one change made to them.
//!
//! Invariants checked on every input:
//! - it never panics (libFuzzer reports a panic as a crash);
//! - whatever verifies has, in the header the verifier reads, a `v1` entry equal to
//!   HMAC-SHA256(one of the secrets, "{id}.{timestamp}.{body}") over exactly the texts
//!   read, an id of 1..=256 bytes, and a timestamp of ASCII digits within the tolerance;
//! - an honest delivery (id of 1..=256 bytes, timestamp within the tolerance) verifies,
//!   with `svix-*` or `webhook-*` names, and one outside the tolerance gets the
//!   matching timestamp error.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use seam_access_sync::seam::signature::{Verifier, VerifyError, WebhookSecrets, sign};
use sha2::Sha256;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// Signs with neither of the verifier's secrets.
const OTHER_SECRET: &str = "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldA==";
const NOW: i64 = 1_795_000_000;
const TOLERANCE: i64 = 300;

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any headers (repeats allowed), any body.
    Raw { headers: Vec<(Name, Vec<u8>)>, body: Vec<u8> },
    /// An honest delivery, then one change.
    Signed { id: String, offset: i16, body: Vec<u8>, webhook_names: bool, new_secret: bool, change: Change },
}

#[derive(Arbitrary, Debug, Clone)]
enum Name {
    SvixId,
    SvixTimestamp,
    SvixSignature,
    WebhookId,
    WebhookTimestamp,
    WebhookSignature,
    Other(String),
}

impl Name {
    fn header(&self) -> Option<HeaderName> {
        let name = match self {
            Name::SvixId => "svix-id",
            Name::SvixTimestamp => "svix-timestamp",
            Name::SvixSignature => "svix-signature",
            Name::WebhookId => "webhook-id",
            Name::WebhookTimestamp => "webhook-timestamp",
            Name::WebhookSignature => "webhook-signature",
            Name::Other(name) => return HeaderName::from_bytes(name.as_bytes()).ok(),
        };
        Some(HeaderName::from_static(name))
    }
}

#[derive(Arbitrary, Debug)]
enum Change {
    Nothing,
    FlipBodyBit(usize, u8),
    AppendToBody(Vec<u8>),
    TruncateBody(usize),
    ReplaceId(Vec<u8>),
    ReplaceTimestamp(Vec<u8>),
    ReplaceSignature(Vec<u8>),
    FlipSignatureByte(usize, u8),
    TruncateSignature(usize),
    PrefixSignature(Vec<u8>),
    SuffixSignature(Vec<u8>),
    AddHeader(Name, Vec<u8>),
    RemoveHeader(Name),
    SignWithAnotherSecret,
}

fn keys() -> Vec<Vec<u8>> {
    [SECRET, NEW_SECRET].iter().map(|secret| STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap()).collect()
}

/// The first value of `svix-{name}`, else of `webhook-{name}`, as the verifier reads it.
fn read<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(format!("svix-{name}")).or_else(|| headers.get(format!("webhook-{name}"))).and_then(|v| v.to_str().ok())
}

fn verify_and_check(verifier: &Verifier, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
    let delivery = verifier.verify(headers, body, NOW)?;
    let id = read(headers, "id").expect("verified without an id");
    let timestamp = read(headers, "timestamp").expect("verified without a timestamp");
    let signatures = read(headers, "signature").expect("verified without a signature");
    assert_eq!(delivery.message_id, id);
    assert!(!id.is_empty() && id.len() <= 256, "id of {} bytes verified", id.len());
    assert!(timestamp.bytes().all(|b| b.is_ascii_digit()), "timestamp {timestamp:?} verified");
    let sent: i64 = timestamp.parse().expect("a verified timestamp is a number");
    assert!((sent - NOW).abs() <= TOLERANCE, "timestamp {sent} verified");
    assert!(signatures.len() <= 4096);
    let expected: Vec<Vec<u8>> = keys()
        .iter()
        .map(|key| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        })
        .collect();
    let genuine = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|signature| STANDARD.decode(signature).ok())
        .any(|signature| expected.contains(&signature));
    assert!(genuine, "verified without a genuine v1 signature: {signatures:?}");
    Ok(())
}

fn set(headers: &mut HeaderMap, name: &Name, value: &[u8]) {
    if let (Some(name), Ok(value)) = (name.header(), HeaderValue::from_bytes(value)) {
        headers.insert(name, value);
    }
}

fuzz_target!(|input: Input| {
    let secrets = WebhookSecrets::parse(&format!("{SECRET} {NEW_SECRET}")).unwrap();
    let verifier = Verifier::new(secrets, TOLERANCE as u64);
    match input {
        Input::Raw { headers: pairs, body } => {
            let mut headers = HeaderMap::new();
            for (name, value) in &pairs {
                if let (Some(name), Ok(value)) = (name.header(), HeaderValue::from_bytes(value)) {
                    headers.append(name, value);
                }
            }
            let _ = verify_and_check(&verifier, &headers, &body);
        }
        Input::Signed { id, offset, mut body, webhook_names, new_secret, change } => {
            let timestamp = NOW + i64::from(offset);
            let secret = if new_secret { NEW_SECRET } else { SECRET };
            let Ok(mut signature) = sign(secret, &id, timestamp, &body) else { return };
            let (id_name, timestamp_name, signature_name) = if webhook_names {
                (Name::WebhookId, Name::WebhookTimestamp, Name::WebhookSignature)
            } else {
                (Name::SvixId, Name::SvixTimestamp, Name::SvixSignature)
            };
            let Ok(id_value) = HeaderValue::from_str(&id) else { return };
            let honest = matches!(change, Change::Nothing);
            match &change {
                Change::FlipBodyBit(at, bit) if !body.is_empty() => {
                    let at = at % body.len();
                    body[at] ^= 1 << (bit % 8);
                }
                Change::FlipBodyBit(..) => body.push(0),
                Change::AppendToBody(more) => body.extend(more),
                Change::TruncateBody(len) => body.truncate(*len),
                Change::FlipSignatureByte(at, bit) => {
                    let mut bytes = signature.into_bytes();
                    let at = at % bytes.len();
                    bytes[at] ^= 1 << (bit % 7);
                    signature = String::from_utf8_lossy(&bytes).into_owned();
                }
                Change::TruncateSignature(len) => signature.truncate((*len).min(signature.len())),
                Change::PrefixSignature(prefix) => {
                    signature = format!("{}{signature}", String::from_utf8_lossy(prefix));
                }
                Change::SuffixSignature(suffix) => signature.push_str(&String::from_utf8_lossy(suffix)),
                Change::SignWithAnotherSecret => signature = sign(OTHER_SECRET, &id, timestamp, &body).unwrap(),
                _ => {}
            }
            let mut headers = HeaderMap::new();
            headers.insert(id_name.header().unwrap(), id_value);
            set(&mut headers, &timestamp_name, timestamp.to_string().as_bytes());
            set(&mut headers, &signature_name, signature.as_bytes());
            match &change {
                Change::ReplaceId(value) => set(&mut headers, &id_name, value),
                Change::ReplaceTimestamp(value) => set(&mut headers, &timestamp_name, value),
                Change::ReplaceSignature(value) => set(&mut headers, &signature_name, value),
                Change::AddHeader(name, value) => {
                    if let (Some(name), Ok(value)) = (name.header(), HeaderValue::from_bytes(value)) {
                        headers.append(name, value);
                    }
                }
                Change::RemoveHeader(name) => {
                    if let Some(name) = name.header() {
                        headers.remove(name);
                    }
                }
                _ => {}
            }
            let result = verify_and_check(&verifier, &headers, &body);
            if honest {
                // `HeaderValue::to_str` reads tabs and visible ASCII only.
                let readable = id.bytes().all(|b| b == b'\t' || (32..127).contains(&b));
                let expected = if id.is_empty() || id.len() > 256 || !readable {
                    Err(VerifyError::MalformedHeader("svix-id"))
                } else if i64::from(offset) < -TOLERANCE {
                    Err(VerifyError::TimestampTooOld)
                } else if i64::from(offset) > TOLERANCE {
                    Err(VerifyError::TimestampInFuture)
                } else {
                    Ok(())
                };
                assert_eq!(result, expected, "honest delivery: id {id:?}, offset {offset}");
            }
        }
    }
});
