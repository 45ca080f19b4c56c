//! The Seam API client: fetches one access code and classifies the answer.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use crate::config::SeamSettings;
use crate::seam::event::CodeEndpoint;
use crate::seam::redact::{bounded, describe_json_error, seam_error_text};

/// Longest id from Seam's answer quoted in an error.
const MAX_QUOTED_ID: usize = 100;

#[derive(Clone)]
pub struct SeamClient {
    http: reqwest::Client,
    base_url: String,
    api_key: SecretString,
    /// Largest answer read (`seam.max_response_bytes`).
    max_response_bytes: usize,
    /// Paces every call of every clone (`worker.max_requests_per_second`): the
    /// worker, catch-up and the import share one budget.
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

/// The fields of an access code the mirror queries; every other field stays in `raw`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AccessCode {
    pub access_code_id: String,
    pub device_id: Option<String>,
    pub workspace_id: Option<String>,
    pub status: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub starts_at: Option<String>,
    #[serde(default)]
    pub ends_at: Option<String>,
    #[serde(default)]
    pub is_managed: Option<bool>,
    /// Kept as raw JSON: Seam adds warning and error codes often.
    #[serde(default, deserialize_with = "list_or_null")]
    pub warnings: Vec<Value>,
    #[serde(default, deserialize_with = "list_or_null")]
    pub errors: Vec<Value>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub is_backup: Option<bool>,
    #[serde(default)]
    pub is_backup_access_code_available: Option<bool>,
    #[serde(default)]
    pub pulled_backup_access_code_id: Option<String>,
    #[serde(default)]
    pub is_offline_access_code: Option<bool>,
    #[serde(default)]
    pub is_one_time_use: Option<bool>,
    #[serde(default)]
    pub is_waiting_for_code_assignment: Option<bool>,
    #[serde(default)]
    pub is_scheduled_on_device: Option<bool>,
    /// Changes Seam is still pushing to the device, as Seam lists them.
    #[serde(default, deserialize_with = "list_or_null")]
    pub pending_mutations: Vec<Value>,
}

fn list_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    Ok(Option::<Vec<Value>>::deserialize(d)?.unwrap_or_default())
}

/// A fetched code: the fields we use and the whole object as Seam sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedCode {
    pub code: AccessCode,
    pub raw: Value,
}

/// Every way a fetch can end.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchOutcome {
    /// 200: apply it.
    Found(Box<FetchedCode>),
    /// 404: the code no longer exists (removed, expired, deleted). An ending.
    Gone,
    /// 429, 5xx, timeouts, connection errors, unreadable 200s, answers over
    /// `seam.max_response_bytes`: try again later. `status` is None when no answer came.
    Transient { reason: String, retry_after: Option<Duration>, status: Option<u16> },
    /// 401/403: the API key is wrong. Keep the work; an operator must fix the key.
    KeyRejected { status: u16, message: String },
    /// Any other 4xx: retrying will not help. `message` is Seam's error type and
    /// message, scrubbed (`redact::seam_error_text`), never the body.
    Rejected { status: u16, message: String },
}

crate::text_enum::text_enum! {
    /// A `FetchOutcome` without its data: for logs and metric labels.
    pub enum FetchKind {
        Found = "found", Gone = "gone", Transient = "transient", KeyRejected = "key_rejected", Rejected = "rejected",
    }
}

impl FetchOutcome {
    pub fn kind(&self) -> FetchKind {
        match self {
            FetchOutcome::Found(_) => FetchKind::Found,
            FetchOutcome::Gone => FetchKind::Gone,
            FetchOutcome::Transient { .. } => FetchKind::Transient,
            FetchOutcome::KeyRejected { .. } => FetchKind::KeyRejected,
            FetchOutcome::Rejected { .. } => FetchKind::Rejected,
        }
    }

    /// The HTTP status Seam answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            FetchOutcome::Found(_) => Some(200),
            FetchOutcome::Gone => Some(404),
            FetchOutcome::Transient { status, .. } => *status,
            FetchOutcome::KeyRejected { status, .. } | FetchOutcome::Rejected { status, .. } => Some(*status),
        }
    }
}

#[derive(Deserialize)]
struct GetResponse {
    access_code: Value,
}

#[derive(Deserialize)]
struct EventsResponse {
    events: Vec<Value>,
}

/// Which events `/events/list` returns: created after `since`, or between two times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EventWindow {
    Since(DateTime<Utc>),
    Between(DateTime<Utc>, DateTime<Utc>),
}

/// Why `/events/list` gave nothing usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ListError {
    #[error("Seam rejected the API key: HTTP {status}: {message}")]
    KeyRejected { status: u16, message: String },
    /// The answer was over `seam.max_response_bytes`: ask for a smaller window.
    #[error("{}", too_large(*max_bytes))]
    TooLarge { max_bytes: usize },
    #[error("{0}")]
    Failed(String),
}

/// Why an answer's body was not read whole.
enum BodyError {
    /// Declared or grown past `seam.max_response_bytes`; the rest was never read.
    TooLarge,
    Transport(reqwest::Error),
}

/// The reason given for an answer over the limit (no content of it).
fn too_large(max_bytes: usize) -> String {
    format!("answer too large: over seam.max_response_bytes ({max_bytes} bytes), dropped unread")
}

impl SeamClient {
    pub fn new(settings: &SeamSettings) -> anyhow::Result<SeamClient> {
        crate::install_tls_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout())
            .timeout(settings.timeout())
            .user_agent(concat!("seam-access-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(SeamClient {
            http,
            base_url: settings.api_url.trim_end_matches('/').to_owned(),
            api_key: settings.api_key.clone(),
            max_response_bytes: settings.max_response_bytes,
            limiter: None,
        })
    }

    /// This client, making at most `per_second` calls a second across all its
    /// clones (0: no limit).
    pub fn paced(mut self, per_second: u32) -> SeamClient {
        self.limiter = NonZeroU32::new(per_second).map(|rate| Arc::new(RateLimiter::direct(Quota::per_second(rate))));
        self
    }

    /// Waits for the pace's next slot.
    async fn pace(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
    }

    /// `GET /access_codes/get` (or `/access_codes/unmanaged/get`) for one code.
    pub async fn get_access_code(&self, access_code_id: &str, endpoint: CodeEndpoint) -> FetchOutcome {
        let path = match endpoint {
            CodeEndpoint::Managed => "/access_codes/get",
            CodeEndpoint::Unmanaged => "/access_codes/unmanaged/get",
        };
        self.pace().await;
        let response = self
            .http
            .get(format!("{}{path}", self.base_url))
            .query(&[("access_code_id", access_code_id)])
            .header(AUTHORIZATION, format!("Bearer {}", self.api_key.expose_secret()))
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                return FetchOutcome::Transient {
                    reason: describe_transport_error(e),
                    retry_after: None,
                    status: None,
                };
            }
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = match read_limited(response, self.max_response_bytes).await {
            Ok(body) => body,
            Err(e) => {
                let reason = match e {
                    BodyError::TooLarge if status == StatusCode::OK => too_large(self.max_response_bytes),
                    BodyError::TooLarge => format!("HTTP {status}: {}", too_large(self.max_response_bytes)),
                    BodyError::Transport(e) => describe_transport_error(e),
                };
                return FetchOutcome::Transient { reason, retry_after, status: Some(status.as_u16()) };
            }
        };
        classify(status, &body, retry_after, access_code_id)
    }
}

/// The body of `response`, at most `limit` bytes: a declared `Content-Length` over
/// the limit is refused before reading, a body that grows past it is dropped as soon
/// as it does (the connection is closed, the rest never read).
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    let declared = response.content_length();
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::with_capacity(declared.map_or(0, |length| length as usize));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if chunk.len() > limit - body.len() {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl SeamClient {
    /// `POST /events/list` for one window, at most `limit` events, of `event_types`
    /// only (every one a value of the `event_types` enum Seam publishes: the live API
    /// may refuse others).
    pub async fn list_events(
        &self,
        window: EventWindow,
        event_types: &[&str],
        limit: u32,
    ) -> Result<Vec<Value>, ListError> {
        let mut body = serde_json::json!({ "event_types": event_types, "limit": limit });
        match window {
            EventWindow::Since(since) => body["since"] = since.to_rfc3339().into(),
            EventWindow::Between(from, to) => body["between"] = serde_json::json!([from.to_rfc3339(), to.to_rfc3339()]),
        }
        self.pace().await;
        let response = self
            .http
            .post(format!("{}/events/list", self.base_url))
            .header(AUTHORIZATION, format!("Bearer {}", self.api_key.expose_secret()))
            .json(&body)
            .send()
            .await
            .map_err(|e| ListError::Failed(describe_transport_error(e)))?;
        let status = response.status();
        let bytes = read_limited(response, self.max_response_bytes).await.map_err(|e| match e {
            // Only a page of events grows with the window; an error answer that large
            // is no reason to ask for less.
            BodyError::TooLarge if status == StatusCode::OK => {
                ListError::TooLarge { max_bytes: self.max_response_bytes }
            }
            BodyError::TooLarge => ListError::Failed(format!("HTTP {status}: {}", too_large(self.max_response_bytes))),
            BodyError::Transport(e) => ListError::Failed(describe_transport_error(e)),
        })?;
        match status.as_u16() {
            200 => serde_json::from_slice::<EventsResponse>(&bytes)
                .map(|r| r.events)
                .map_err(|e| ListError::Failed(format!("the /events/list answer {}", describe_json_error(&e)))),
            401 | 403 => Err(ListError::KeyRejected { status: status.as_u16(), message: seam_error_text(&bytes) }),
            _ => Err(ListError::Failed(format!("HTTP {status}: {}", seam_error_text(&bytes)))),
        }
    }
}

fn classify(status: StatusCode, body: &[u8], retry_after: Option<Duration>, access_code_id: &str) -> FetchOutcome {
    match status.as_u16() {
        200 => parse_found(body, access_code_id).unwrap_or_else(|reason| FetchOutcome::Transient {
            reason,
            retry_after: None,
            status: Some(200),
        }),
        // Seam's own "not found" error: the code is gone. Any other 404 (a wrong
        // SEAM_API_URL, a proxy) says nothing about the code: retry, never delete.
        404 if is_seam_not_found(body) => FetchOutcome::Gone,
        404 => FetchOutcome::Transient {
            reason: format!(
                "HTTP 404 without Seam's not_found error (is SEAM_API_URL right?): {}",
                seam_error_text(body)
            ),
            retry_after: None,
            status: Some(404),
        },
        401 | 403 => FetchOutcome::KeyRejected { status: status.as_u16(), message: seam_error_text(body) },
        408 | 429 => {
            FetchOutcome::Transient { reason: format!("HTTP {status}"), retry_after, status: Some(status.as_u16()) }
        }
        400..=499 => FetchOutcome::Rejected { status: status.as_u16(), message: seam_error_text(body) },
        _ => FetchOutcome::Transient {
            reason: format!("HTTP {status}: {}", seam_error_text(body)),
            retry_after,
            status: Some(status.as_u16()),
        },
    }
}

/// A 200's access code. Errors never quote the answer (serde's own text does: the
/// value of a mistyped `code` is the PIN); the typed fields are read from the bytes
/// again so that an error can say where it is.
fn parse_found(body: &[u8], access_code_id: &str) -> Result<FetchOutcome, String> {
    let response: GetResponse =
        serde_json::from_slice(body).map_err(|e| format!("unreadable 200 answer: it {}", describe_json_error(&e)))?;
    let code = serde_json::from_slice::<TypedGetResponse>(body)
        .map_err(|e| format!("unreadable access_code in 200 answer: it {}", describe_json_error(&e)))?
        .access_code;
    if code.access_code_id != access_code_id {
        return Err(format!("answer is for another access code ({})", bounded(&code.access_code_id, MAX_QUOTED_ID)));
    }
    Ok(FetchOutcome::Found(Box::new(FetchedCode { code, raw: response.access_code })))
}

#[derive(Deserialize)]
struct TypedGetResponse {
    access_code: AccessCode,
}

/// `{"error": {"type": "not_found" | "…_not_found", …}}`, as Seam answers for an
/// unknown or deleted code.
fn is_seam_not_found(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.get("type")?.as_str().map(|t| t == "not_found" || t.ends_with("_not_found")))
        .unwrap_or(false)
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

fn describe_transport_error(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    // The causes, without the URL: reqwest's own message hides why it failed.
    let mut text = kind.to_owned();
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(source) = cause {
        text.push_str(": ");
        text.push_str(&source.to_string());
        cause = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_with_only_ids_and_status_parses() {
        let body = br#"{"access_code":{"access_code_id":"ac1","device_id":"d1","status":"setting"},"ok":true}"#;
        let FetchOutcome::Found(found) = classify(StatusCode::OK, body, None, "ac1") else { panic!() };
        assert_eq!(found.code.status, "setting");
        assert!(found.code.warnings.is_empty() && found.code.errors.is_empty());
    }

    #[test]
    fn unknown_warning_codes_and_null_lists_are_kept() {
        let body = br#"{"access_code":{"access_code_id":"ac1","device_id":"d1","status":"set",
            "warnings":[{"warning_code":"brand_new_warning_2027","message":"m","extra":{"a":1}}],
            "errors":null,"some_new_field":true},"ok":true}"#;
        let FetchOutcome::Found(found) = classify(StatusCode::OK, body, None, "ac1") else { panic!() };
        assert_eq!(found.code.warnings[0]["warning_code"], "brand_new_warning_2027");
        assert_eq!(found.raw["some_new_field"], true);
    }

    #[test]
    fn answers_are_classified() {
        let none = None;
        let not_found = br#"{"error":{"type":"not_found","message":"Access code not found"},"ok":false}"#;
        assert_eq!(classify(StatusCode::NOT_FOUND, not_found, none, "a"), FetchOutcome::Gone);
        let specific = br#"{"error":{"type":"access_code_not_found","message":"gone"},"ok":false}"#;
        assert_eq!(classify(StatusCode::NOT_FOUND, specific, none, "a"), FetchOutcome::Gone);
        for other in [&b"{}"[..], b"<html>Not Found</html>", br#"{"error":{"type":"route_missing"}}"#] {
            assert!(
                matches!(
                    classify(StatusCode::NOT_FOUND, other, none, "a"),
                    FetchOutcome::Transient { status: Some(404), .. }
                ),
                "a 404 that is not Seam's not_found never deletes"
            );
        }
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, br#"{"error":{"type":"unauthorized","message":"Unauthorized"},"ok":false}"#, none, "a"),
            FetchOutcome::KeyRejected { status: 401, message } if message == "unauthorized: Unauthorized"
        ));
        let wait = Some(Duration::from_secs(7));
        assert!(
            matches!(classify(StatusCode::TOO_MANY_REQUESTS, b"", wait, "a"), FetchOutcome::Transient { retry_after, .. } if retry_after == wait)
        );
        assert!(matches!(classify(StatusCode::BAD_GATEWAY, b"", none, "a"), FetchOutcome::Transient { .. }));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, br#"{"error":{"type":"invalid_input","message":"bad"}}"#, none, "a"),
            FetchOutcome::Rejected { status: 400, message } if message == "invalid_input: bad"
        ));
        assert!(matches!(classify(StatusCode::OK, b"{}", none, "a"), FetchOutcome::Transient { .. }));
        let other = br#"{"access_code":{"access_code_id":"other","status":"set"}}"#;
        assert!(matches!(classify(StatusCode::OK, other, none, "a"), FetchOutcome::Transient { .. }));
    }

    #[test]
    fn no_outcome_quotes_a_pin_from_the_answer() {
        let none = None;
        let pin = "905531";
        let outcomes = [
            // A PIN sent as a number: serde's own error text would quote it.
            classify(StatusCode::OK, br#"{"access_code":{"access_code_id":"a","status":"set","code":905531}}"#, none, "a"),
            classify(StatusCode::OK, br#"{"access_code":{"access_code_id":"a","status":905531}}"#, none, "a"),
            classify(StatusCode::OK, br#"{"access_code":{"access_code_id":"a","code":"905531"#, none, "a"),
            classify(StatusCode::OK, br#"{"access_code":905531}"#, none, "a"),
            // Error answers that echo the code.
            classify(
                StatusCode::BAD_REQUEST,
                br#"{"error":{"type":"invalid_input","message":"code 905531 rejected","data":{"code":"905531"}},"ok":false}"#,
                none,
                "a",
            ),
            classify(StatusCode::UNPROCESSABLE_ENTITY, br#"{"access_code":{"code":"905531"}}"#, none, "a"),
            classify(StatusCode::NOT_FOUND, b"<html>no route for code=905531</html>", none, "a"),
            classify(StatusCode::FORBIDDEN, br#"{"error":{"type":"forbidden","message":"not for 905531"}}"#, none, "a"),
            classify(StatusCode::INTERNAL_SERVER_ERROR, br#"{"code":"905531"}"#, none, "a"),
        ];
        for outcome in outcomes {
            let text = format!("{outcome:?}");
            assert!(!text.contains(pin), "{text}");
            assert!(!matches!(outcome, FetchOutcome::Found(_)), "{text}");
        }
        let FetchOutcome::Transient { reason, .. } = classify(
            StatusCode::OK,
            br#"{"access_code":{"access_code_id":"a","status":"set","code":905531}}"#,
            none,
            "a",
        ) else {
            panic!()
        };
        assert_eq!(
            reason,
            "unreadable access_code in 200 answer: it has a field missing or of the wrong type (line 1, column 65)"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "12".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(12)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        headers.insert(RETRY_AFTER, httpdate::fmt_http_date(later).parse().unwrap());
        let parsed = retry_after(&headers).unwrap();
        assert!(parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120), "{parsed:?}");
    }
}
