//! Hostile and malformed requests against the running service, over real HTTP (and
//! raw TCP for what an HTTP client will not send): every one gets a sane answer and
//! writes nothing, except the rows whose odd ids are valid, which must store one
//! event with the id exactly as sent, and the rows hiding PINs where Seam nests
//! them, which must store the event with none of those PINs. The service stays
//! healthy throughout, with bounded memory.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use test_kit::sign_text;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::webhook::{Rejection, rejections};

/// `server.max_body_bytes` (the default).
const LIMIT: usize = 256 * 1024;
/// `server.body_read_timeout_ms` in these tests.
const BODY_TIMEOUT_MS: u64 = 300;
const TOLERANCE: i64 = 300;

enum Request {
    /// Sent by reqwest: any method and path, header values as bytes (a name may
    /// repeat), and the body whole (with `Content-Length`) or chunked (without).
    Http { method: Method, path: String, headers: Vec<(HeaderName, HeaderValue)>, body: Body },
    /// Written as is on a fresh connection; then the connection stays open and
    /// silent (`close_sending` false) or our sending side is closed.
    Raw { bytes: Vec<u8>, close_sending: bool },
}

enum Body {
    Whole(Vec<u8>),
    Chunked(Vec<u8>),
}

enum Expect {
    /// This status and, for the endpoint's own answers, this error code; nothing written.
    Refused(StatusCode, Option<&'static str>),
    /// 200 "accepted", one event stored whose `access_code_id` (column and payload)
    /// is exactly this, one re-fetch queued for it; none of `pins` anywhere in the
    /// stored payload.
    Stored(String, Vec<&'static str>),
}

struct Case {
    name: String,
    request: Request,
    expect: Expect,
}

fn refused(name: &str, request: Request, status: StatusCode, error: &'static str) -> Case {
    Case { name: name.into(), request, expect: Expect::Refused(status, Some(error)) }
}

/// Refused before the endpoint runs (hyper or the router): no error body to check.
fn refused_early(name: &str, request: Request, status: StatusCode) -> Case {
    Case { name: name.into(), request, expect: Expect::Refused(status, None) }
}

fn stored(name: &str, request: Request, access_code_id: &str) -> Case {
    Case { name: name.into(), request, expect: Expect::Stored(access_code_id.into(), Vec::new()) }
}

/// A valid event for `access_code_id` with `fields` on top, hiding `pins`: stored,
/// with every one of them redacted (`store_pins` is off).
fn stored_without_pins(name: &str, access_code_id: &str, fields: Value, pins: Vec<&'static str>) -> Case {
    let mut body = access_code_event("access_code.changed", access_code_id, "2026-11-25T10:00:00Z");
    body["code"] = Value::Null;
    body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    let request = signed_post(body.to_string().into_bytes());
    Case { name: name.into(), request, expect: Expect::Stored(access_code_id.into(), pins) }
}

fn header(name: &str, value: impl AsRef<[u8]>) -> (HeaderName, HeaderValue) {
    (HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_bytes(value.as_ref()).unwrap())
}

fn new_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// Svix's three headers for `body`, signed as `id` at `timestamp`.
fn svix(id: &str, timestamp: i64, body: &[u8]) -> Vec<(HeaderName, HeaderValue)> {
    svix_headers(SECRET, id, timestamp, body).into_iter().map(|(name, value)| header(name, value)).collect()
}

/// `headers` with the first `name` given `value` instead.
fn with(
    mut headers: Vec<(HeaderName, HeaderValue)>,
    name: &str,
    value: impl AsRef<[u8]>,
) -> Vec<(HeaderName, HeaderValue)> {
    let slot = headers.iter_mut().find(|(n, _)| n == name).expect("header to replace");
    slot.1 = HeaderValue::from_bytes(value.as_ref()).unwrap();
    headers
}

/// `headers` with one more, appended (a repeat when the name is already there).
fn plus(
    mut headers: Vec<(HeaderName, HeaderValue)>,
    name: &str,
    value: impl AsRef<[u8]>,
) -> Vec<(HeaderName, HeaderValue)> {
    headers.push(header(name, value));
    headers
}

fn post(headers: Vec<(HeaderName, HeaderValue)>, body: Vec<u8>) -> Request {
    Request::Http { method: Method::POST, path: "/webhooks/seam".into(), headers, body: Body::Whole(body) }
}

/// `body` signed as a fresh delivery at the app's time.
fn signed_post(body: Vec<u8>) -> Request {
    post(svix(&new_id(), NOW, &body), body)
}

fn request(method: Method, path: &str, headers: Vec<(HeaderName, HeaderValue)>, body: Vec<u8>) -> Request {
    Request::Http { method, path: path.into(), headers, body: Body::Whole(body) }
}

/// An `access_code.created` event for `access_code_id`, with a fresh event id.
fn event(access_code_id: &str) -> Vec<u8> {
    access_code_event("access_code.created", access_code_id, "2026-11-25T10:00:00Z").to_string().into_bytes()
}

/// An event with `field` set to the raw JSON text `value`, e.g. `"\u0000"` or `42`.
fn event_with_raw(field: &str, value: &str) -> Vec<u8> {
    let mut body = access_code_event("access_code.created", "ac_raw", "2026-11-25T10:00:00Z");
    body.as_object_mut().unwrap().remove(field);
    let text = body.to_string();
    format!("{{\"{field}\":{value},{}", &text[1..]).into_bytes()
}

/// A raw `POST /webhooks/seam` with `headers` (each line ending in CRLF) and `body`.
fn raw_post(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("POST /webhooks/seam HTTP/1.1\r\nhost: 127.0.0.1\r\n{headers}\r\n").into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Svix's three header lines for `body` signed as a fresh delivery.
fn svix_lines(body: &[u8]) -> String {
    svix_headers(SECRET, &new_id(), NOW, body).iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect()
}

/// Every hostile request, with what it must get. The first rows are
/// `webhook.rs`'s table of rejections; the rest are added here.
fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = rejections()
        .into_iter()
        .map(|Rejection { name, headers, body, status, error }| {
            let headers = headers.iter().map(|(n, v)| header(n, v)).collect();
            refused(name, post(headers, body), status, error)
        })
        .collect();

    let good = event("ac_1");
    let good_headers = || svix(&new_id(), NOW, &good);
    let genuine = |id: &str, timestamp: i64| sign(SECRET, id, timestamp, &good);
    let unauthorized = StatusCode::UNAUTHORIZED;
    let bad_request = StatusCode::BAD_REQUEST;

    // Repeated headers: the first value is the one read (as Svix's own libraries
    // do), so a genuine value hidden behind a forged one does not count.
    cases.push(refused(
        "two svix-signature headers, the genuine one second",
        post(
            plus(
                with(svix("msg_sig2", NOW, &good), "svix-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
                "svix-signature",
                genuine("msg_sig2", NOW),
            ),
            good.clone(),
        ),
        unauthorized,
        "invalid_signature",
    ));
    cases.push(refused(
        "two svix-id headers, the signed one second",
        post(
            plus(with(svix("msg_signed", NOW, &good), "svix-id", "msg_forged"), "svix-id", "msg_signed"),
            good.clone(),
        ),
        unauthorized,
        "invalid_signature",
    ));
    cases.push(refused(
        "two svix-timestamp headers, the signed one second",
        post(
            plus(with(good_headers(), "svix-timestamp", (NOW + 1).to_string()), "svix-timestamp", NOW.to_string()),
            good.clone(),
        ),
        unauthorized,
        "invalid_signature",
    ));
    cases.push(stored(
        "two svix-id headers, the signed one first",
        {
            let body = event("ac_first_wins");
            post(plus(svix("msg_first", NOW, &body), "svix-id", "msg_forged"), body)
        },
        "ac_first_wins",
    ));
    cases.push(refused(
        "svix-id and webhook-id disagree, webhook-id signed",
        post(plus(with(svix("msg_std", NOW, &good), "svix-id", "msg_forged"), "webhook-id", "msg_std"), good.clone()),
        unauthorized,
        "invalid_signature",
    ));

    // Oversized headers: hyper reads a head of up to `server.max_header_bytes`
    // (16 KiB) and `server.max_headers` (64) lines; past that it answers 431 itself.
    // Below, our own limits answer 400.
    cases.push(refused(
        "8 KiB svix-id",
        post(with(good_headers(), "svix-id", "i".repeat(8 * 1024)), good.clone()),
        bad_request,
        "malformed_header",
    ));
    cases.push(refused(
        "8 KiB svix-signature",
        post(with(good_headers(), "svix-signature", "v1,".repeat(8 * 1024 / 3)), good.clone()),
        bad_request,
        "malformed_header",
    ));
    cases.push(refused(
        "8 KiB unrelated header with a forged signature",
        post(plus(with(good_headers(), "svix-signature", "v1,AAAA"), "x-padding", "p".repeat(8 * 1024)), good.clone()),
        unauthorized,
        "invalid_signature",
    ));
    for (name, header_name) in [("64 KiB svix-id", "svix-id"), ("64 KiB svix-signature", "svix-signature")] {
        cases.push(refused_early(
            name,
            post(with(good_headers(), header_name, "i".repeat(64 * 1024)), good.clone()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ));
    }
    cases.push(refused_early(
        "64 KiB unrelated header with a forged signature",
        post(plus(with(good_headers(), "svix-signature", "v1,AAAA"), "x-padding", "p".repeat(64 * 1024)), good.clone()),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    ));
    cases.push(refused(
        "svix-id of 257 bytes",
        post(svix(&"i".repeat(257), NOW, &good), good.clone()),
        bad_request,
        "malformed_header",
    ));
    let many_headers: String = (0..200).map(|i| format!("x-h{i}: {i}\r\n")).collect();
    cases.push(refused_early(
        "200 header lines",
        Request::Raw {
            bytes: raw_post(&format!("{}{many_headers}content-length: 0\r\n", svix_lines(b"")), b""),
            close_sending: false,
        },
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    ));
    cases.push(refused_early(
        "a 512 KiB header",
        Request::Raw {
            bytes: raw_post(&format!("x-padding: {}\r\ncontent-length: 0\r\n", "p".repeat(512 * 1024)), b""),
            close_sending: false,
        },
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    ));

    // Signatures that are almost right.
    let mac_of = |signature: String| signature.strip_prefix("v1,").unwrap().to_owned();
    cases.push(refused(
        "v1 signature truncated to 30 bytes",
        post(
            with(svix("msg_t", NOW, &good), "svix-signature", format!("v1,{}", &mac_of(genuine("msg_t", NOW))[..40])),
            good.clone(),
        ),
        unauthorized,
        "invalid_signature",
    ));
    cases.push(refused(
        "v1 signature without its base64 padding",
        post(
            with(
                svix("msg_p", NOW, &good),
                "svix-signature",
                format!("v1,{}", mac_of(genuine("msg_p", NOW)).trim_end_matches('=')),
            ),
            good.clone(),
        ),
        unauthorized,
        "invalid_signature",
    ));
    cases.push(refused(
        "genuine signature under version v2",
        post(
            with(svix("msg_v", NOW, &good), "svix-signature", format!("v2,{}", mac_of(genuine("msg_v", NOW)))),
            good.clone(),
        ),
        unauthorized,
        "invalid_signature",
    ));
    cases.push(refused(
        "signature made for another timestamp",
        post(with(svix("msg_ts", NOW, &good), "svix-timestamp", (NOW + 1).to_string()), good.clone()),
        unauthorized,
        "invalid_signature",
    ));
    cases.push(refused(
        "signature header of separators only",
        post(with(good_headers(), "svix-signature", ", ,,  , v1"), good.clone()),
        unauthorized,
        "invalid_signature",
    ));
    cases.push(refused(
        "non-UTF-8 signature header",
        post(with(good_headers(), "svix-signature", b"v1,\xff\xfe\xfd"), good.clone()),
        bad_request,
        "malformed_header",
    ));
    cases.push(refused(
        "non-UTF-8 svix-id",
        post(with(good_headers(), "svix-id", b"msg_\xc3\x28"), good.clone()),
        bad_request,
        "malformed_header",
    ));

    // Timestamps: ±tolerance is accepted (the ±tolerance+1 rows are above).
    let at = |timestamp: i64, code: &str| {
        let body = event(code);
        post(svix(&new_id(), timestamp, &body), body)
    };
    cases.push(stored("timestamp exactly tolerance old", at(NOW - TOLERANCE, "ac_old_edge"), "ac_old_edge"));
    cases.push(stored("timestamp exactly tolerance ahead", at(NOW + TOLERANCE, "ac_new_edge"), "ac_new_edge"));
    cases.push(refused(
        "timestamp with a leading +",
        post(with(good_headers(), "svix-timestamp", format!("+{NOW}")), good.clone()),
        bad_request,
        "malformed_header",
    ));
    cases.push(refused(
        "timestamp with a space inside",
        post(with(good_headers(), "svix-timestamp", "1795 000000"), good.clone()),
        bad_request,
        "malformed_header",
    ));
    cases.push(refused(
        "timestamp with a fraction",
        post(with(good_headers(), "svix-timestamp", format!("{NOW}.5")), good.clone()),
        bad_request,
        "malformed_header",
    ));
    cases.push(refused(
        "timestamp in milliseconds (13 digits)",
        post(with(good_headers(), "svix-timestamp", format!("{NOW}000")), good.clone()),
        bad_request,
        "malformed_header",
    ));
    cases.push(refused(
        "largest accepted timestamp text, far in the future",
        post(svix("msg_far", 999_999_999_999, &good), good.clone()),
        unauthorized,
        "timestamp_in_future",
    ));
    cases.push(refused(
        "timestamp 0",
        post(svix("msg_zero", 0, &good), good.clone()),
        unauthorized,
        "timestamp_too_old",
    ));
    cases.push(refused(
        "timestamp in full-width digits",
        post(with(good_headers(), "svix-timestamp", "１７９５０００００００"), good.clone()),
        bad_request,
        "malformed_header",
    ));
    // Spaces around a header value are HTTP's optional whitespace, not part of it:
    // the signed text is the trimmed one.
    cases.push(refused(
        "timestamp padded with spaces, signed with the spaces",
        {
            let padded = format!("  {NOW}  ");
            let headers = with(svix("msg_pad", NOW, &good), "svix-timestamp", &padded);
            post(with(headers, "svix-signature", sign_text(SECRET, "msg_pad", &padded, &good)), good.clone())
        },
        unauthorized,
        "invalid_signature",
    ));
    cases.push(stored(
        "timestamp padded with spaces, signed without them",
        {
            let body = event("ac_padded");
            post(with(svix("msg_pad2", NOW, &body), "svix-timestamp", format!("  {NOW}\t")), body)
        },
        "ac_padded",
    ));

    // Bodies, validly signed.
    let nested_object = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)).into_bytes();
    cases.push(refused("deeply nested objects", signed_post(nested_object), bad_request, "invalid_event"));
    let mut deep_field = access_code_event("access_code.created", "ac_deep", "2026-11-25T10:00:00Z");
    deep_field["extra"] = (0..200).fold(json!(1), |inner, _| json!([inner]));
    cases.push(refused(
        "an event with a field nested 200 deep",
        signed_post(serde_json::to_vec(&deep_field).unwrap()),
        bad_request,
        "invalid_event",
    ));
    cases.push(refused(
        "invalid UTF-8 inside a JSON string",
        signed_post([b"{\"access_code_id\":\"ac_\xff\xfe\",".as_slice(), &event("ac_utf8")[1..]].concat()),
        bad_request,
        "invalid_event",
    ));
    cases.push(refused("empty body", signed_post(Vec::new()), bad_request, "invalid_event"));
    cases.push(refused("body null", signed_post(b"null".to_vec()), bad_request, "invalid_event"));
    cases.push(refused(
        "body a 200 000-digit number",
        signed_post(format!("1{}", "0".repeat(200_000)).into_bytes()),
        bad_request,
        "invalid_event",
    ));
    cases.push(refused(
        "body with a byte-order mark",
        signed_post([b"\xef\xbb\xbf".as_slice(), &event("ac_bom")].concat()),
        bad_request,
        "invalid_event",
    ));
    cases.push(refused(
        "body with trailing garbage",
        signed_post([event("ac_tail").as_slice(), b" {}"].concat()),
        bad_request,
        "invalid_event",
    ));
    cases.push(refused(
        "duplicate key: access_code_id then null",
        signed_post({
            let text = String::from_utf8(event("ac_dup")).unwrap();
            format!("{},\"access_code_id\":null}}", text.strip_suffix('}').unwrap()).into_bytes()
        }),
        bad_request,
        "invalid_event",
    ));
    cases.push(stored(
        "duplicate key: the last access_code_id wins, in the column and the payload",
        signed_post(event_with_raw("access_code_id", "\"ac_first\",\"access_code_id\":\"ac_last\"")),
        "ac_last",
    ));
    cases.push(refused(
        "event_type a number",
        signed_post(event_with_raw("event_type", "42")),
        bad_request,
        "invalid_event",
    ));
    cases.push(refused(
        "event_type of 256 bytes",
        signed_post(event_with_raw("event_type", &format!("\"access_code.{}\"", "x".repeat(256 - 12)))),
        bad_request,
        "invalid_event",
    ));
    cases.push(refused(
        "access_code_id with a lone surrogate",
        signed_post(event_with_raw("access_code_id", "\"ac_\\ud800\"")),
        bad_request,
        "invalid_event",
    ));
    cases.push(refused(
        "access_code_id with a NUL character",
        signed_post(event_with_raw("access_code_id", "\"ac_\\u0000_x\"")),
        bad_request,
        "invalid_event",
    ));
    cases.push(refused(
        "a NUL character deep in the payload",
        signed_post(event_with_raw("event_description", "{\"k\":[\"a\\u0000b\"]}")),
        bad_request,
        "invalid_event",
    ));
    cases.push(refused(
        "a NUL character in a key",
        signed_post(event_with_raw("nul\\u0000key", "1")),
        bad_request,
        "invalid_event",
    ));
    // Odd ids that are valid (at most 255 bytes) are stored exactly as sent.
    for (name, id) in [
        ("access_code_id with SQL metacharacters", "'; DROP TABLE seam_events; --".to_owned()),
        ("access_code_id with quotes, backslashes and a LIKE pattern", r#"a'b"c\d%_e$$f"#.to_owned()),
        ("access_code_id with unicode", "ac_ключ_鍵_🔑_\u{202e}rtl_e\u{301}".to_owned()),
        ("access_code_id with URL metacharacters", "../../access_codes/get?x=1&y=2#z".to_owned()),
        ("access_code_id of exactly 255 bytes (3-byte characters)", "€".repeat(85)),
    ] {
        cases.push(stored(name, signed_post(event(&id)), &id));
    }
    cases.push(refused(
        "access_code_id of 256 bytes (4-byte characters)",
        signed_post(event(&"🔑".repeat(64))),
        bad_request,
        "invalid_event",
    ));

    // PINs where Seam nests them (and where it might), valid events: stored, none of
    // the PINs kept. Each PIN is unique to its row.
    cases.push(stored_without_pins(
        "code_changed: PINs in from.code and to.code",
        "ac_pin_code_changed",
        json!({"event_type": "access_code.code_changed", "from": {"code": "40511"}, "to": {"code": "40512"}}),
        vec!["40511", "40512"],
    ));
    cases.push(stored_without_pins(
        "changed: a code property's from and to",
        "ac_pin_changed",
        json!({"changed_properties": [{"property": "code", "from": "40521", "to": "40522"}]}),
        vec!["40521", "40522"],
    ));
    cases.push(stored_without_pins(
        "changed: a code property whose values are objects",
        "ac_pin_changed_objects",
        json!({"changed_properties": [{"property": "code", "from": {"value": "40531"}, "to": ["40532"]}]}),
        vec!["40531", "40532"],
    ));
    cases.push(stored_without_pins(
        "mutations_requested: PINs in from and to, one a number",
        "ac_pin_requested",
        json!({"event_type": "access_code.mutations_requested", "requested_mutations": [
            {"mutation_code": "updating_code", "from": {"code": "40541"}, "to": {"code": 40542}}
        ]}),
        vec!["40541", "40542"],
    ));
    cases.push(stored_without_pins(
        "mutations_requested: updating_code with plain from and to",
        "ac_pin_requested_plain",
        json!({"event_type": "access_code.mutations_requested", "requested_mutations": [
            {"mutation_code": "updating_code", "from": "40551", "to": "40552"}
        ]}),
        vec!["40551", "40552"],
    ));
    cases.push(stored_without_pins(
        "the top-level PIN as a number",
        "ac_pin_number",
        json!({"event_type": "access_code.set_on_device", "code": 40561}),
        vec!["40561"],
    ));
    cases.push(stored_without_pins(
        "a future event type carrying a whole access code with pending mutations",
        "ac_pin_future",
        json!({"event_type": "access_code.invented_in_2027", "access_code": {
            "access_code_id": "ac_pin_future", "code": "40571",
            "pending_mutations": [{"mutation_code": "updating_code", "from": {"code": "40572"}, "to": {"code": "40573"}}]
        }}),
        vec!["40571", "40572", "40573"],
    ));
    cases.push(stored_without_pins(
        "PINs in from and to deep inside an unknown field, and a backup code",
        "ac_pin_deep",
        json!({
            "extra": {"history": [[{"from": {"code": "40581"}, "to": {"code": "40582"}}]]},
            "backup_access_code": {"code": "40583"},
            "codes": [{"access_code_id": "ac_other", "code": "40584"}]
        }),
        vec!["40581", "40582", "40583", "40584"],
    ));
    cases.push(refused(
        "a NUL character inside a nested PIN",
        signed_post(event_with_raw("from", "{\"code\":\"40\\u000091\"}")),
        bad_request,
        "invalid_event",
    ));

    // Bodies over the limit, short bodies and slow bodies.
    cases.push(refused(
        "body over the limit, chunked (no Content-Length)",
        Request::Http {
            method: Method::POST,
            path: "/webhooks/seam".into(),
            headers: good_headers(),
            body: Body::Chunked(vec![b' '; LIMIT + 1]),
        },
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    ));
    cases.push(refused(
        "Content-Length over the limit, 10 bytes sent",
        Request::Raw { bytes: raw_post("content-length: 1000000000\r\n", b"0123456789"), close_sending: false },
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    ));
    let lying = event("ac_lying");
    cases.push(refused(
        "Content-Length smaller than the body",
        Request::Raw {
            bytes: raw_post(&format!("{}content-length: {}\r\n", svix_lines(&lying), lying.len() - 10), &lying),
            close_sending: false,
        },
        unauthorized,
        "invalid_signature",
    ));
    let short = event("ac_short");
    cases.push(refused(
        "Content-Length larger than the body, then the sender closes",
        Request::Raw {
            bytes: raw_post(&format!("{}content-length: {}\r\n", svix_lines(&short), short.len() + 10), &short),
            close_sending: true,
        },
        bad_request,
        "body_unreadable",
    ));
    cases.push(refused(
        "slow body: a few bytes, then silence",
        Request::Raw {
            bytes: raw_post(&format!("{}content-length: {}\r\n", svix_lines(&good), good.len()), &good[..10]),
            close_sending: false,
        },
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
    ));
    cases.push(refused(
        "invalid chunk size",
        Request::Raw {
            bytes: raw_post("transfer-encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n"),
            close_sending: false,
        },
        bad_request,
        "body_unreadable",
    ));
    let both = event("ac_te_cl");
    // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length (hyper then closes
    // the connection), so the signed chunked body is what counts.
    cases.push(stored(
        "Transfer-Encoding chunked and a lying Content-Length",
        Request::Raw {
            bytes: raw_post(
                &format!("{}content-length: 4\r\ntransfer-encoding: chunked\r\n", svix_lines(&both)),
                &[format!("{:x}\r\n", both.len()).as_bytes(), &both, b"\r\n0\r\n\r\n"].concat(),
            ),
            close_sending: false,
        },
        "ac_te_cl",
    ));
    cases.push(refused_early(
        "two different Content-Length headers",
        Request::Raw { bytes: raw_post("content-length: 5\r\ncontent-length: 6\r\n", b"hello!"), close_sending: false },
        bad_request,
    ));
    cases.push(refused_early(
        "not HTTP at all",
        Request::Raw {
            bytes: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n".to_vec(),
            close_sending: false,
        },
        bad_request,
    ));

    // Wrong methods and paths.
    for method in [Method::GET, Method::PUT, Method::DELETE, Method::PATCH] {
        let name = format!("{method} /webhooks/seam");
        cases.push(Case {
            name,
            request: request(method, "/webhooks/seam", good_headers(), good.clone()),
            expect: Expect::Refused(StatusCode::METHOD_NOT_ALLOWED, None),
        });
    }
    for path in ["/webhooks/seam/", "/webhooks/SEAM", "/webhooks", "/webhooks/seam%2F..%2Fseam"] {
        cases.push(Case {
            name: format!("POST {path}"),
            request: request(Method::POST, path, good_headers(), good.clone()),
            expect: Expect::Refused(StatusCode::NOT_FOUND, None),
        });
    }
    // reqwest would resolve the dot segments itself; sent raw, they reach the router.
    cases.push(refused_early(
        "POST /webhooks/x/../seam (dot segments, sent raw)",
        Request::Raw {
            bytes: [
                b"POST /webhooks/x/../seam HTTP/1.1\r\nhost: 127.0.0.1\r\n".as_slice(),
                svix_lines(&good).as_bytes(),
                format!("content-length: {}\r\n\r\n", good.len()).as_bytes(),
                &good,
            ]
            .concat(),
            close_sending: false,
        },
        StatusCode::NOT_FOUND,
    ));
    cases.push(refused_early(
        "POST /healthz",
        request(Method::POST, "/healthz", good_headers(), good.clone()),
        StatusCode::METHOD_NOT_ALLOWED,
    ));

    // Issue 12: the open port beyond the webhook.
    let invented = Method::from_bytes(format!("M{}", "X".repeat(999)).as_bytes()).unwrap();
    for path in ["/healthz", "/metrics", "/webhooks/seam"] {
        cases.push(refused_early(
            &format!("a 1,000-byte invented method on {path}"),
            request(invented.clone(), path, good_headers(), good.clone()),
            StatusCode::METHOD_NOT_ALLOWED,
        ));
    }
    let bearer = || vec![header("authorization", format!("Bearer {API_TOKEN_FOR_ABUSE}"))];
    let bad_parameter = StatusCode::BAD_REQUEST;
    for (name, path) in [
        ("NUL in device_id", "/v1/access_codes?device_id=%00"),
        ("NUL in status", "/v1/access_codes?status=set%00"),
        ("a cursor decoding to NUL", "/v1/access_codes?cursor=AA"),
        ("NUL in the path id", "/v1/access_codes/%00"),
        ("an empty limit", "/v1/access_codes?limit="),
        ("an empty boolean", "/v1/access_codes?has_errors="),
        ("a limit past the page size", "/v1/access_codes?limit=1000001"),
    ] {
        cases.push(refused(name, request(Method::GET, path, bearer(), vec![]), bad_parameter, "invalid_parameter"));
    }
    cases.push(refused(
        "the read API with a wrong token",
        request(Method::GET, "/v1/access_codes", vec![header("authorization", "bearer wrong")], vec![]),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    ));
    cases
}

struct Answer {
    status: StatusCode,
    body: String,
    elapsed: Duration,
}

async fn send(app: &TestApp, http: &reqwest::Client, request: Request) -> Answer {
    let started = Instant::now();
    match request {
        Request::Http { method, path, headers, body } => {
            let mut builder = http.request(method, format!("{}{path}", app.address));
            for (name, value) in headers {
                builder = builder.header(name, value);
            }
            builder = match body {
                Body::Whole(bytes) => builder.body(bytes),
                Body::Chunked(bytes) => {
                    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                        bytes.chunks(1024).map(|chunk| Ok(chunk.to_vec())).collect();
                    builder.body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
                }
            };
            let response = builder.send().await.expect("an answer");
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            Answer { status, body, elapsed: started.elapsed() }
        }
        Request::Raw { bytes, close_sending } => {
            let (status, body) = raw_exchange(app, &bytes, close_sending).await;
            Answer { status, body, elapsed: started.elapsed() }
        }
    }
}

/// Writes `bytes` on a new connection and reads the first answer.
async fn raw_exchange(app: &TestApp, bytes: &[u8], close_sending: bool) -> (StatusCode, String) {
    let address = app.address.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(address).await.unwrap();
    // The service may answer (and close) before reading everything: a failed write
    // is fine as long as the answer can be read.
    let _ = stream.write_all(bytes).await;
    if close_sending {
        stream.shutdown().await.unwrap();
    }
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0u8; 8192];
        loop {
            if let Some(answer) = parse_answer(&received) {
                return answer;
            }
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return parse_answer(&received).expect("a complete answer before the close"),
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("an answer within 10 s")
}

/// The status and body of the first complete HTTP/1.1 answer in `bytes`.
fn parse_answer(bytes: &[u8]) -> Option<(StatusCode, String)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .map_or(0, |v| v.parse().unwrap_or(0));
    let body = bytes.get(end + 4..end + 4 + length)?;
    Some((StatusCode::from_u16(status).ok()?, String::from_utf8_lossy(body).into_owned()))
}

async fn check(app: &TestApp, http: &reqwest::Client, pool: &PgPool, case: Case) {
    let Case { name, request, expect } = case;
    let before = written(pool).await;
    let answer = send(app, http, request).await;
    match expect {
        Expect::Refused(status, error) => {
            assert_eq!(answer.status, status, "{name}: {}", answer.body);
            if let Some(error) = error {
                let body: Value =
                    serde_json::from_str(&answer.body).unwrap_or_else(|_| panic!("{name}: {}", answer.body));
                assert_eq!(body["error"], error, "{name}");
            }
            assert_eq!(written(pool).await, before, "{name} wrote something");
        }
        Expect::Stored(access_code_id, pins) => {
            assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.body);
            let body: Value = serde_json::from_str(&answer.body).unwrap();
            assert_eq!(body["status"], "accepted", "{name}");
            let after = written(pool).await;
            assert_eq!((after.0, after.2), (before.0 + 1, before.2), "{name}: one event, no mirror row");
            let (column, in_payload): (String, String) = sqlx::query_as(
                "SELECT access_code_id, payload->>'access_code_id' FROM seam_events ORDER BY received_at DESC LIMIT 1",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            assert_eq!(column, access_code_id, "{name}: the stored id");
            assert_eq!(in_payload, access_code_id, "{name}: the id in the stored payload");
            let queued: i64 =
                sqlx::query_scalar("SELECT count(*) FROM access_code_refetches WHERE access_code_id = $1")
                    .bind(&access_code_id)
                    .fetch_one(pool)
                    .await
                    .unwrap();
            assert_eq!(queued, 1, "{name}: one re-fetch queued for the id");
            let payload: String = sqlx::query_scalar(
                "SELECT payload::text FROM seam_events WHERE access_code_id = $1 ORDER BY received_at DESC LIMIT 1",
            )
            .bind(&access_code_id)
            .fetch_one(pool)
            .await
            .unwrap();
            for pin in pins {
                assert!(!payload.contains(pin), "{name}: PIN {pin} stored: {payload}");
            }
        }
    }
    if name.starts_with("slow body") {
        let timeout = Duration::from_millis(BODY_TIMEOUT_MS);
        assert!(
            answer.elapsed >= timeout && answer.elapsed < timeout * 10,
            "{name}: answered after {:?}",
            answer.elapsed
        );
    }
}

/// The read API's token in the abuse table's service.
const API_TOKEN_FOR_ABUSE: &str = "abuse-table-token-0123456789abcdef";

fn app_settings() -> seam_access_sync::config::Settings {
    settings_with(
        "http://127.0.0.1:9",
        &[&format!("[server]\nbody_read_timeout_ms = {BODY_TIMEOUT_MS}\n[api]\ntokens = \"{API_TOKEN_FOR_ABUSE}\"")],
    )
}

#[sqlx::test]
async fn every_hostile_request_gets_a_sane_answer_and_writes_nothing_it_should_not(pool: PgPool) {
    let app = spawn_app_with(pool.clone(), app_settings()).await;
    let cases = cases();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "each case has its own name");
    assert!(cases.len() >= 60, "{} cases", cases.len());
    println!("{} hostile requests", cases.len());
    let stored_rows = cases.iter().filter(|c| matches!(c.expect, Expect::Stored(..))).count() as i64;

    // A fresh connection per request: one the service closed after its answer is
    // never reused for the next row.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    for case in cases {
        check(&app, &http, &pool, case).await;
    }

    assert_eq!(count(&pool, "seam_events").await, stored_rows, "only the valid rows were stored");
    for table in ["seam_events", "access_code_refetches", "access_codes", "access_code_history"] {
        let exists: bool =
            sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(table).fetch_one(&pool).await.unwrap();
        assert!(exists, "{table} still exists");
    }
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
}

/// Resident memory of this process (the service runs in it), in bytes.
fn resident_bytes() -> u64 {
    test_kit::process::memory(std::process::id()).expect("VmRSS of this process").resident
}

#[sqlx::test]
async fn memory_stays_bounded_under_500_rejected_bodies_of_256_kib(pool: PgPool) {
    // Bodies arrive whole here; a generous body timeout keeps a busy machine from
    // turning the 401s this test counts into 408s.
    let settings = settings_with("http://127.0.0.1:9", &["[server]\nbody_read_timeout_ms = 10000"]);
    let app = spawn_app_with(pool.clone(), settings).await;
    let body = vec![b' '; LIMIT];
    let forged = |i: usize| {
        vec![
            header("svix-id", format!("msg_{i}")),
            header("svix-timestamp", NOW.to_string()),
            header("svix-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        ]
    };
    let round = |from: usize, count: usize| {
        let (app, body) = (&app, &body);
        async move {
            for batch in (from..from + count).collect::<Vec<_>>().chunks(10) {
                let sends = batch.iter().map(|i| send(app, &app.http, post(forged(*i), body.clone())));
                for answer in futures::future::join_all(sends).await {
                    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
                }
            }
        }
    };
    // Warm up the allocator and the connection pool first.
    round(0, 50).await;
    let before = resident_bytes();
    round(50, 500).await;
    let grown = resident_bytes().saturating_sub(before);
    println!("resident memory: {} MiB before, grew by {} KiB", before / (1024 * 1024), grown / 1024);

    assert!(grown < 64 * 1024 * 1024, "resident memory grew by {} MiB", grown / (1024 * 1024));
    assert_eq!(written(&pool).await, (0, 0, 0));
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}
