//! The verifier against the public Standard Webhooks / Svix vectors and against an
//! independent signer.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use seam_access_sync::seam::signature::{SecretError, Verifier, VerifyError, WebhookSecrets, sign};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("../fixtures/standard-webhooks-vectors.json")).unwrap()
}

fn verifier(secrets: &str) -> Verifier {
    Verifier::new(WebhookSecrets::parse(secrets).unwrap(), 300)
}

fn headers(prefix: &str, id: Option<&str>, timestamp: Option<&str>, signature: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [("id", id), ("timestamp", timestamp), ("signature", signature)] {
        if let Some(value) = value {
            headers.insert(
                HeaderName::try_from(format!("{prefix}-{name}")).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
    }
    headers
}

fn expected_name(result: &Result<(), VerifyError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(VerifyError::MissingHeader(_)) => "missing_header",
        Err(VerifyError::MalformedHeader("svix-timestamp")) => "invalid_timestamp",
        Err(VerifyError::MalformedHeader(_)) => "malformed_header",
        Err(VerifyError::TimestampTooOld) => "timestamp_too_old",
        Err(VerifyError::TimestampInFuture) => "timestamp_in_future",
        Err(VerifyError::NoMatchingSignature) => "invalid_signature",
    }
}

#[test]
fn the_sign_vectors_produce_the_published_signatures() {
    for vector in vectors()["sign_vectors"].as_array().unwrap() {
        let signature = sign(
            vector["secret"].as_str().unwrap(),
            vector["msg_id"].as_str().unwrap(),
            vector["timestamp"].as_i64().unwrap(),
            vector["payload"].as_str().unwrap().as_bytes(),
        )
        .unwrap();
        assert_eq!(signature, vector["expected_signature"].as_str().unwrap(), "{}", vector["name"]);
    }
}

#[test]
fn every_verify_vector_gives_its_expected_answer() {
    let all = vectors();
    let bases: Vec<(&str, &Value)> = vec![("A", &all["sign_vectors"][0]), ("B", &all["sign_vectors"][1])];
    let mut checked = 0;
    for case in all["verify_vectors"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        // Vector C is ed25519 (v1a) with a public key: an HMAC-only verifier has no
        // key for it. `A_only_v1a_hmac_verifier` checks that v1a never passes here.
        let Some((_, base)) = bases.iter().find(|(b, _)| *b == case["base"].as_str().unwrap()) else {
            assert!(name.starts_with("C_"), "unknown base in {name}");
            continue;
        };
        let id = case["msg_id_override"].as_str().or(base["msg_id"].as_str()).unwrap();
        let timestamp = case["timestamp_header_raw"]
            .as_str()
            .map(str::to_owned)
            .or(case["timestamp_override"].as_i64().map(|t| t.to_string()))
            .unwrap_or_else(|| base["timestamp"].as_i64().unwrap().to_string());
        let payload = case["payload_override"].as_str().or(base["payload"].as_str()).unwrap();
        let signature = case["signature_header"].as_str();
        let dropped = case["drop_header"].as_str();
        let prefix = if case["header_names"] == "svix" { "svix" } else { "webhook" };
        let headers = headers(
            prefix,
            (dropped != Some("id")).then_some(id),
            (dropped != Some("timestamp")).then_some(timestamp.as_str()),
            if dropped == Some("signature") { None } else { signature },
        );
        let result = verifier(base["secret"].as_str().unwrap())
            .verify(&headers, payload.as_bytes(), case["now"].as_i64().unwrap())
            .map(|_| ());
        assert_eq!(expected_name(&result), case["expect"].as_str().unwrap(), "vector {name}");
        checked += 1;
    }
    assert_eq!(checked, 29, "every HMAC vector was checked");
}

#[test]
fn secret_formats_follow_the_vectors() {
    let all = vectors();
    let cases = all["secret_vectors"].as_array().unwrap();
    assert_eq!(WebhookSecrets::parse(cases[0]["secret"].as_str().unwrap()).unwrap_err(), SecretError::Missing);
    assert_eq!(WebhookSecrets::parse(cases[1]["secret"].as_str().unwrap()).unwrap_err(), SecretError::Empty(1));
    // Without the prefix: the same key.
    let a = &all["sign_vectors"][0];
    let unprefixed = sign(cases[2]["secret"].as_str().unwrap(), "m", 1, b"x").unwrap();
    assert_eq!(unprefixed, sign(a["secret"].as_str().unwrap(), "m", 1, b"x").unwrap());
    // Truncated secrets whose last base64 symbol is not canonical: rejected, as the
    // Rust reference libraries do (Python pads and accepts them).
    for case in &cases[3..] {
        assert_eq!(
            WebhookSecrets::parse(case["secret"].as_str().unwrap()).unwrap_err(),
            SecretError::Malformed(1),
            "{case}"
        );
    }
    // A canonical secret that only lacks its `=` padding is accepted.
    let padded = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGA==";
    let unpadded = padded.trim_end_matches('=');
    assert_eq!(sign(unpadded, "m", 1, b"x").unwrap(), sign(padded, "m", 1, b"x").unwrap());
}

#[test]
fn during_a_rotation_either_secret_or_both_signatures_verify() {
    let rotation = &vectors()["rotation_scenario"];
    let text = |k: &str| rotation[k].as_str().unwrap().to_owned();
    let both_secrets = format!("{} {}", text("old_secret"), text("new_secret"));
    let ts = rotation["timestamp"].as_i64().unwrap();
    for secrets in [both_secrets.as_str(), &text("old_secret"), &text("new_secret")] {
        for header in ["sig_old", "sig_new", "header_both"] {
            let headers = headers("svix", Some(&text("msg_id")), Some(&ts.to_string()), Some(&text(header)));
            let result = verifier(secrets).verify(&headers, text("payload").as_bytes(), ts);
            let signed_by_a_known_secret = secrets == both_secrets
                || header == "header_both"
                || (header == "sig_old") == (secrets == text("old_secret"));
            assert_eq!(result.is_ok(), signed_by_a_known_secret, "secrets={secrets} header={header}");
        }
    }
}

#[test]
fn signatures_from_the_standardwebhooks_crate_verify() {
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let independent = standardwebhooks::Webhook::new(secret).unwrap();
    let payload = br#"{"event_id":"e1","event_type":"access_code.set_on_device","access_code_id":"ac1"}"#;
    let now = 1_795_000_000;
    let signature = independent.sign("msg_independent", now, payload).unwrap();
    let theirs = headers("webhook", Some("msg_independent"), Some(&now.to_string()), Some(&signature));
    assert!(verifier(secret).verify(&theirs, payload, now).is_ok());
    // And the other way: what we sign, the crate verifies (it checks the
    // timestamp against the real clock, so sign for now).
    let real_now = chrono::Utc::now().timestamp();
    let ours = sign(secret, "msg_ours", real_now, payload).unwrap();
    let ours = headers("webhook", Some("msg_ours"), Some(&real_now.to_string()), Some(&ours));
    independent.verify(payload, &ours).expect("standardwebhooks verifies our signature");
}

#[test]
fn the_signature_header_is_found_whatever_its_case() {
    let a = &vectors()["sign_vectors"][0];
    let mut headers = HeaderMap::new();
    // HeaderMap normalises names; parsing from mixed case proves the lookup.
    for (name, value) in [
        ("Svix-Id", a["msg_id"].as_str().unwrap().to_owned()),
        ("SVIX-TIMESTAMP", a["timestamp"].to_string()),
        ("svix-Signature", a["expected_signature"].as_str().unwrap().to_owned()),
    ] {
        headers.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    let now = a["timestamp"].as_i64().unwrap();
    assert!(
        verifier(a["secret"].as_str().unwrap())
            .verify(&headers, a["payload"].as_str().unwrap().as_bytes(), now)
            .is_ok()
    );
}

#[test]
fn svix_headers_win_over_webhook_headers() {
    let a = &vectors()["sign_vectors"][0];
    let now = a["timestamp"].as_i64().unwrap();
    let mut both = headers("svix", a["msg_id"].as_str(), Some(&now.to_string()), a["expected_signature"].as_str());
    both.insert("webhook-id", "msg_other".parse().unwrap());
    both.insert("webhook-signature", "v1,AAAA".parse().unwrap());
    let result = verifier(a["secret"].as_str().unwrap()).verify(&both, a["payload"].as_str().unwrap().as_bytes(), now);
    assert_eq!(result.unwrap().message_id, a["msg_id"].as_str().unwrap());
}
