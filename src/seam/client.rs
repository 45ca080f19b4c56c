//! The Seam API client: fetches one access code and classifies the answer; reads
//! the event log; pages through the device and access-code lists (the import).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use serde::Deserialize;
use serde_json::Value;

use crate::config::SeamSettings;
use crate::seam::breaker::{Breaker, CallResult, NotCalled};
use crate::seam::credential::Credential;
use crate::seam::event::CodeEndpoint;
use crate::seam::redact::{bounded, describe_json_error, seam_error_text};

/// Longest id from Seam's answer quoted in an error.
const MAX_QUOTED_ID: usize = 100;

/// The header in which Seam names each request it answers.
pub const REQUEST_ID_HEADER: &str = "seam-request-id";

/// Longest `seam-request-id` kept.
const MAX_REQUEST_ID: usize = 100;

/// How a failure's text names the request Seam answered: ` (seam-request-id: …)`,
/// at its end.
const REQUEST_ID_PREFIX: &str = " (seam-request-id: ";

/// Seam's id for one answered request (its `seam-request-id` header): what Seam
/// support asks for. Only 1 to `MAX_REQUEST_ID` visible ASCII characters are taken
/// for one; any other value (control characters, spaces, non-ASCII, too long) is
/// dropped, never cut or quoted, so it cannot forge a log line or grow one. It is a
/// header, not Seam's body, so it is quoted as it is (no PIN scrubbing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The request id of an answer, when it carries a well-formed one.
    pub fn of(headers: &HeaderMap) -> Option<RequestId> {
        RequestId::parse(headers.get(REQUEST_ID_HEADER)?.as_bytes())
    }

    /// `value` as a request id, if it is one.
    pub fn parse(value: &[u8]) -> Option<RequestId> {
        let visible = value.iter().all(u8::is_ascii_graphic);
        let fits = (1..=MAX_REQUEST_ID).contains(&value.len());
        (visible && fits).then(|| RequestId(value.iter().map(|&b| char::from(b)).collect()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `text` naming the request it is about, when Seam named it: every failure of every
/// call ends this way, so logs, `last_error` and the CLI show what support asks for.
fn traced(text: String, request_id: Option<&RequestId>) -> String {
    match request_id {
        Some(id) => format!("{text}{REQUEST_ID_PREFIX}{id})"),
        None => text,
    }
}

/// `text` cut to about `max_chars` characters (with `…` when cut), keeping the
/// ` (seam-request-id: …)` it ends with whole: a cut request id is useless to Seam
/// support. Control characters become spaces.
pub fn shortened_keeping_request_id(text: &str, max_chars: usize) -> String {
    let (head, id) = match text.rfind(REQUEST_ID_PREFIX) {
        Some(at) if text.ends_with(')') => text.split_at(at),
        _ => (text, ""),
    };
    format!("{}{}", bounded(head, max_chars), bounded(id, MAX_REQUEST_ID + REQUEST_ID_PREFIX.len() + 1))
}

/// What every call reads of an answer's head, once: its status, `Retry-After` and
/// request id.
struct Head {
    status: StatusCode,
    retry_after: Option<Duration>,
    request_id: Option<RequestId>,
}

impl Head {
    fn of(response: &reqwest::Response) -> Head {
        Head {
            status: response.status(),
            retry_after: retry_after(response.headers()),
            request_id: RequestId::of(response.headers()),
        }
    }
}

#[derive(Clone)]
pub struct SeamClient {
    http: reqwest::Client,
    base_url: String,
    /// `Authorization` (and `seam-workspace` for a personal access token), marked
    /// sensitive so they are never logged.
    auth: HeaderMap,
    /// Largest answer read (`seam.max_response_bytes`).
    max_response_bytes: usize,
    /// Paces every call of every clone (`worker.max_requests_per_second`): the
    /// worker, catch-up and the import share one budget.
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    /// Stops every call of every clone while Seam is failing (`seam::breaker`).
    breaker: Arc<Breaker>,
}

/// Why a call brought no answer.
enum SendError {
    /// Not made: the breaker is open, or a 429 paused every call.
    NotCalled(NotCalled),
    /// Made, and no answer came (refused, timed out, reset).
    Transport(String),
}

impl SendError {
    fn reason(self) -> String {
        match self {
            SendError::NotCalled(not) => not_called_reason(&not),
            SendError::Transport(reason) => reason,
        }
    }
}

fn not_called_reason(not: &NotCalled) -> String {
    format!("not called: {} (next try in {} ms)", not.reason, not.retry_in.as_millis())
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
    /// Not called: Seam has been failing (the breaker is open) or asked every call to
    /// wait (429). Nothing was learned; the work keeps its place and its attempts.
    NotCalled { reason: String, retry_in: Duration },
    /// 401/403: the API key is wrong. Keep the work; an operator must fix the key.
    KeyRejected { status: u16, message: String },
    /// Any other 4xx: retrying will not help. `message` is Seam's error type and
    /// message, scrubbed (`redact::seam_error_text`), never the body.
    Rejected { status: u16, message: String },
}

crate::text_enum::text_enum! {
    /// A `FetchOutcome` without its data: for logs and metric labels.
    pub enum FetchKind {
        Found = "found", Gone = "gone", Transient = "transient", NotCalled = "not_called",
        KeyRejected = "key_rejected", Rejected = "rejected",
    }
}

impl FetchOutcome {
    pub fn kind(&self) -> FetchKind {
        match self {
            FetchOutcome::Found(_) => FetchKind::Found,
            FetchOutcome::Gone => FetchKind::Gone,
            FetchOutcome::Transient { .. } => FetchKind::Transient,
            FetchOutcome::NotCalled { .. } => FetchKind::NotCalled,
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
            FetchOutcome::NotCalled { .. } => None,
            FetchOutcome::KeyRejected { status, .. } | FetchOutcome::Rejected { status, .. } => Some(*status),
        }
    }

    /// A failure with the answer's request id at the end of its text.
    fn traced(self, request_id: Option<&RequestId>) -> FetchOutcome {
        match self {
            FetchOutcome::Transient { reason, retry_after, status } => {
                FetchOutcome::Transient { reason: traced(reason, request_id), retry_after, status }
            }
            FetchOutcome::KeyRejected { status, message } => {
                FetchOutcome::KeyRejected { status, message: traced(message, request_id) }
            }
            FetchOutcome::Rejected { status, message } => {
                FetchOutcome::Rejected { status, message: traced(message, request_id) }
            }
            found_or_gone => found_or_gone,
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

/// Why `/events/list` gave nothing usable. Each names the request Seam answered,
/// when it did (`seam-request-id`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ListError {
    #[error("Seam rejected the API key: HTTP {status}: {message}")]
    KeyRejected { status: u16, message: String },
    /// The answer was over `seam.max_response_bytes`: ask for a smaller window.
    #[error("{}", traced(too_large(*max_bytes), request_id.as_ref()))]
    TooLarge { max_bytes: usize, request_id: Option<RequestId> },
    #[error("{0}")]
    Failed(String),
}

impl ListError {
    /// This failure with the answer's request id at the end of its text.
    fn traced(self, id: Option<&RequestId>) -> ListError {
        match self {
            ListError::KeyRejected { status, message } => {
                ListError::KeyRejected { status, message: traced(message, id) }
            }
            ListError::TooLarge { max_bytes, .. } => ListError::TooLarge { max_bytes, request_id: id.cloned() },
            ListError::Failed(reason) => ListError::Failed(traced(reason, id)),
        }
    }
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
    /// A client with `SEAM_API_KEY` (`seam.api_key`).
    pub fn new(settings: &SeamSettings) -> anyhow::Result<SeamClient> {
        let key = &settings.api_key;
        let credential = Credential::parse(key, None).unwrap_or_else(|_| Credential::ApiKey(key.clone()));
        SeamClient::with_credential(settings, &credential)
    }

    /// A client calling Seam with `credential`.
    pub fn with_credential(settings: &SeamSettings, credential: &Credential) -> anyhow::Result<SeamClient> {
        crate::install_tls_provider();
        let mut auth = HeaderMap::new();
        for (name, value) in credential.headers() {
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| anyhow::anyhow!("a Seam credential holds characters an HTTP header cannot carry"))?;
            value.set_sensitive(true);
            auth.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout())
            .timeout(settings.timeout())
            .user_agent(concat!("seam-access-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(SeamClient {
            http,
            base_url: settings.api_url.trim_end_matches('/').to_owned(),
            auth,
            max_response_bytes: settings.max_response_bytes,
            limiter: None,
            breaker: Arc::new(Breaker::new(settings.breaker)),
        })
    }

    /// This client, making at most `per_second` calls a second across all its
    /// clones (0: no limit).
    pub fn paced(mut self, per_second: u32) -> SeamClient {
        self.limiter = NonZeroU32::new(per_second).map(|rate| Arc::new(RateLimiter::direct(Quota::per_second(rate))));
        self
    }

    /// This client, sharing `other`'s pace (one budget of calls for every workspace).
    pub fn sharing_pace_of(mut self, other: &SeamClient) -> SeamClient {
        self.limiter = other.limiter.clone();
        self.breaker = other.breaker.clone();
        self
    }

    /// The breaker every call of this client (and of those sharing its pace) goes through.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// Sends `request` with the credential: through the breaker, then at the pace.
    /// The breaker learns from the answer's status (or its absence).
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, SendError> {
        let permit = self.breaker.admit().await.map_err(SendError::NotCalled)?;
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        match request.headers(self.auth.clone()).send().await {
            Ok(response) => {
                permit.finish(CallResult::of_status(response.status().as_u16(), retry_after(response.headers())));
                Ok(response)
            }
            Err(e) => {
                permit.finish(CallResult::Failed);
                Err(SendError::Transport(describe_transport_error(e)))
            }
        }
    }

    /// `GET /access_codes/get` (or `/access_codes/unmanaged/get`) for one code.
    pub async fn get_access_code(&self, access_code_id: &str, endpoint: CodeEndpoint) -> FetchOutcome {
        let path = match endpoint {
            CodeEndpoint::Managed => "/access_codes/get",
            CodeEndpoint::Unmanaged => "/access_codes/unmanaged/get",
        };
        let request = self.http.get(format!("{}{path}", self.base_url)).query(&[("access_code_id", access_code_id)]);
        let (head, body) = match self.answer(request).await {
            Ok(answer) => answer,
            Err(failed) => return failed,
        };
        classify(head.status, &body, head.retry_after, access_code_id).traced(head.request_id.as_ref())
    }

    /// Sends `request` at the pace, with the credential, and reads its answer within
    /// `seam.max_response_bytes`. No answer, or one whose body was not read whole,
    /// is the `Transient` outcome (traced with Seam's request id when one came).
    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<(Head, Vec<u8>), FetchOutcome> {
        let response = self.send(request).await.map_err(|e| match e {
            SendError::NotCalled(not) => {
                FetchOutcome::NotCalled { reason: not_called_reason(&not), retry_in: not.retry_in }
            }
            SendError::Transport(reason) => FetchOutcome::Transient { reason, retry_after: None, status: None },
        })?;
        let head = Head::of(&response);
        match read_limited(response, self.max_response_bytes).await {
            Ok(body) => Ok((head, body)),
            Err(e) => {
                let reason = match e {
                    BodyError::TooLarge if head.status == StatusCode::OK => too_large(self.max_response_bytes),
                    BodyError::TooLarge => format!("HTTP {}: {}", head.status, too_large(self.max_response_bytes)),
                    BodyError::Transport(e) => describe_transport_error(e),
                };
                let failed = FetchOutcome::Transient {
                    reason,
                    retry_after: head.retry_after,
                    status: Some(head.status.as_u16()),
                };
                Err(failed.traced(head.request_id.as_ref()))
            }
        }
    }
}

impl SeamClient {
    /// `POST /access_codes/pull_backup_access_code` for one (time-bound) code. Found:
    /// the backup code Seam assigned (the same one again if it was pulled before).
    /// Every 4xx but 401/403 is `Rejected` (a 404 too: the code to pull for is
    /// unknown, nothing to delete); 408, 429, 5xx and no answer are `Transient`.
    pub async fn pull_backup_access_code(&self, access_code_id: &str) -> FetchOutcome {
        let request = self
            .http
            .post(format!("{}/access_codes/pull_backup_access_code", self.base_url))
            .json(&serde_json::json!({ "access_code_id": access_code_id }));
        let (head, body) = match self.answer(request).await {
            Ok(answer) => answer,
            Err(failed) => return failed,
        };
        let outcome = match head.status {
            StatusCode::OK => parse_pulled(&body).unwrap_or_else(|reason| FetchOutcome::Transient {
                reason,
                retry_after: None,
                status: Some(200),
            }),
            StatusCode::NOT_FOUND => FetchOutcome::Rejected { status: 404, message: seam_error_text(&body) },
            status => classify(status, &body, head.retry_after, access_code_id),
        };
        outcome.traced(head.request_id.as_ref())
    }
}

/// A pull's 200: the backup code. Errors never quote the answer.
fn parse_pulled(body: &[u8]) -> Result<FetchOutcome, String> {
    #[derive(Deserialize)]
    struct Raw {
        backup_access_code: Value,
    }
    #[derive(Deserialize)]
    struct Typed {
        backup_access_code: AccessCode,
    }
    let raw: Raw =
        serde_json::from_slice(body).map_err(|e| format!("unreadable 200 answer: it {}", describe_json_error(&e)))?;
    let code = serde_json::from_slice::<Typed>(body)
        .map_err(|e| format!("unreadable backup_access_code in 200 answer: it {}", describe_json_error(&e)))?
        .backup_access_code;
    Ok(FetchOutcome::Found(Box::new(FetchedCode { code, raw: raw.backup_access_code })))
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

/// Why `/workspaces/get` named no workspace.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkspaceError {
    /// 401/403: the credential is wrong (or revoked).
    #[error("Seam rejected the credential: HTTP {status}: {message}")]
    Rejected { status: u16, message: String },
    /// No answer, or one that says nothing about the credential: try again later.
    #[error("{0}")]
    Unavailable(String),
}

impl SeamClient {
    /// `GET /workspaces/get`: the id of the workspace this client's credential reaches.
    pub async fn get_workspace(&self) -> Result<String, WorkspaceError> {
        #[derive(Deserialize)]
        struct Answer {
            workspace: Workspace,
        }
        #[derive(Deserialize)]
        struct Workspace {
            workspace_id: String,
        }
        let response = self
            .send(self.http.get(format!("{}/workspaces/get", self.base_url)))
            .await
            .map_err(|e| WorkspaceError::Unavailable(e.reason()))?;
        let Head { status, request_id, .. } = Head::of(&response);
        let id = request_id.as_ref();
        let bytes = read_limited(response, self.max_response_bytes).await.map_err(|e| match e {
            BodyError::TooLarge => WorkspaceError::Unavailable(traced(too_large(self.max_response_bytes), id)),
            BodyError::Transport(e) => WorkspaceError::Unavailable(describe_transport_error(e)),
        })?;
        match status.as_u16() {
            200 => serde_json::from_slice::<Answer>(&bytes).map(|a| a.workspace.workspace_id).map_err(|e| {
                WorkspaceError::Unavailable(traced(
                    format!("the /workspaces/get answer {}", describe_json_error(&e)),
                    id,
                ))
            }),
            401 | 403 => {
                Err(WorkspaceError::Rejected { status: status.as_u16(), message: traced(seam_error_text(&bytes), id) })
            }
            _ => Err(WorkspaceError::Unavailable(traced(format!("HTTP {status}: {}", seam_error_text(&bytes)), id))),
        }
    }

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
        let response = self
            .send(self.http.post(format!("{}/events/list", self.base_url)).json(&body))
            .await
            .map_err(|e| ListError::Failed(e.reason()))?;
        let Head { status, request_id, .. } = Head::of(&response);
        let events = match read_limited(response, self.max_response_bytes).await {
            Ok(bytes) => classify_events(status, &bytes),
            // Only a page of events grows with the window; an error answer that large
            // is no reason to ask for less.
            Err(BodyError::TooLarge) if status == StatusCode::OK => {
                Err(ListError::TooLarge { max_bytes: self.max_response_bytes, request_id: None })
            }
            Err(BodyError::TooLarge) => {
                Err(ListError::Failed(format!("HTTP {status}: {}", too_large(self.max_response_bytes))))
            }
            Err(BodyError::Transport(e)) => Err(ListError::Failed(describe_transport_error(e))),
        };
        events.map_err(|e| e.traced(request_id.as_ref()))
    }
}

/// An `/events/list` answer: its events, or why there are none.
fn classify_events(status: StatusCode, body: &[u8]) -> Result<Vec<Value>, ListError> {
    match status.as_u16() {
        200 => serde_json::from_slice::<EventsResponse>(body)
            .map(|r| r.events)
            .map_err(|e| ListError::Failed(format!("the /events/list answer {}", describe_json_error(&e)))),
        401 | 403 => Err(ListError::KeyRejected { status: status.as_u16(), message: seam_error_text(body) }),
        _ => Err(ListError::Failed(format!("HTTP {status}: {}", seam_error_text(body)))),
    }
}

crate::text_enum::text_enum! {
    /// Seam's paged lists the import reads.
    pub enum SeamList {
        /// `POST /devices/list`
        Devices = "devices",
        /// `POST /access_codes/list` (managed codes of one device)
        AccessCodes = "access_codes",
        /// `POST /access_codes/unmanaged/list` (unmanaged codes of one device)
        UnmanagedAccessCodes = "unmanaged_access_codes",
    }
}

impl SeamList {
    pub fn path(self) -> &'static str {
        match self {
            SeamList::Devices => "/devices/list",
            SeamList::AccessCodes => "/access_codes/list",
            SeamList::UnmanagedAccessCodes => "/access_codes/unmanaged/list",
        }
    }

    /// The list of an access-code endpoint.
    pub fn of_codes(endpoint: CodeEndpoint) -> SeamList {
        match endpoint {
            CodeEndpoint::Managed => SeamList::AccessCodes,
            CodeEndpoint::Unmanaged => SeamList::UnmanagedAccessCodes,
        }
    }

    /// The field of the answer that holds the items.
    fn field(self) -> &'static str {
        match self {
            SeamList::Devices => "devices",
            SeamList::AccessCodes | SeamList::UnmanagedAccessCodes => "access_codes",
        }
    }
}

/// Why a page of a list was not read. Each names the request Seam answered, when it
/// did (`seam-request-id`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PageError {
    /// 401/403: an operator must fix the key.
    #[error("Seam rejected the API key: HTTP {status}: {message}")]
    KeyRejected { status: u16, message: String },
    /// 408, 429, 5xx, a 404 without Seam's `not_found`, no answer, an unreadable 200:
    /// try again later.
    #[error("{reason}")]
    Transient { reason: String, retry_after: Option<Duration>, status: Option<u16> },
    /// Seam's own 404 `…not_found` (the device of a code list no longer exists).
    #[error("HTTP 404: {message}")]
    NotFound { message: String },
    /// Any other 4xx: asking again will not help.
    #[error("HTTP {status}: {message}")]
    Rejected { status: u16, message: String },
    /// Over `seam.max_response_bytes` even one item a page.
    #[error("{}", traced(too_large(*max_bytes), request_id.as_ref()))]
    TooLarge { max_bytes: usize, request_id: Option<RequestId> },
}

impl PageError {
    /// The outcome label of this failure.
    pub fn kind(&self) -> PageKind {
        match self {
            PageError::KeyRejected { .. } => PageKind::KeyRejected,
            PageError::Transient { .. } => PageKind::Transient,
            PageError::NotFound { .. } => PageKind::NotFound,
            PageError::Rejected { .. } => PageKind::Rejected,
            PageError::TooLarge { .. } => PageKind::TooLarge,
        }
    }

    /// This failure with the answer's request id at the end of its text.
    fn traced(self, id: Option<&RequestId>) -> PageError {
        match self {
            PageError::KeyRejected { status, message } => {
                PageError::KeyRejected { status, message: traced(message, id) }
            }
            PageError::Transient { reason, retry_after, status } => {
                PageError::Transient { reason: traced(reason, id), retry_after, status }
            }
            PageError::NotFound { message } => PageError::NotFound { message: traced(message, id) },
            PageError::Rejected { status, message } => PageError::Rejected { status, message: traced(message, id) },
            PageError::TooLarge { max_bytes, .. } => PageError::TooLarge { max_bytes, request_id: id.cloned() },
        }
    }
}

crate::text_enum::text_enum! {
    /// How a call for one page ended: for logs and metric labels.
    pub enum PageKind {
        Ok = "ok", Transient = "transient", KeyRejected = "key_rejected", NotFound = "not_found",
        Rejected = "rejected", TooLarge = "too_large",
    }
}

/// One page of a list, its items parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Items left out: unreadable (logged, never quoted), or, for devices, without
    /// the `access_code` capability.
    pub skipped: usize,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
    /// The `limit` that was answered: smaller than asked when a page was over
    /// `seam.max_response_bytes` and was asked for again in halves.
    pub limit: u32,
    /// Calls made for this page (more than one when it was asked for again smaller).
    pub calls: u32,
}

/// A device that takes access codes, as `/devices/list` names it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Device {
    pub device_id: String,
    #[serde(default)]
    pub connected_account_id: Option<String>,
    #[serde(default)]
    pub workspace_id: Option<String>,
}

#[derive(Deserialize)]
struct ListedDevice {
    #[serde(flatten)]
    device: Device,
    #[serde(default, deserialize_with = "list_or_null")]
    capabilities_supported: Vec<Value>,
}

/// A page of raw items and where the next one starts.
struct RawPage {
    items: Vec<Value>,
    next_cursor: Option<String>,
    limit: u32,
    calls: u32,
}

impl SeamClient {
    /// One page of `/devices/list` from `cursor` (`None`: the first), keeping only
    /// the devices whose `capabilities_supported` holds `access_code`.
    pub async fn devices_page(&self, cursor: Option<&str>, limit: u32) -> Result<Page<Device>, PageError> {
        let raw = self.list_page(SeamList::Devices, serde_json::json!({}), cursor, limit).await?;
        let mut items = Vec::new();
        let mut skipped = 0;
        for (index, item) in raw.items.into_iter().enumerate() {
            match parse_listed::<ListedDevice>(&item) {
                Ok(listed) if listed.capabilities_supported.iter().any(|c| c == "access_code") => {
                    items.push(listed.device)
                }
                Ok(_) => skipped += 1,
                Err(reason) => {
                    tracing::warn!(index, device_id = %listed_id(&item, "device_id"), %reason, "skipping a device /devices/list returned that cannot be read");
                    skipped += 1;
                }
            }
        }
        Ok(Page { items, skipped, next_cursor: raw.next_cursor, limit: raw.limit, calls: raw.calls })
    }

    /// One page of a device's codes: `/access_codes/list` (managed) or
    /// `/access_codes/unmanaged/list`. A code that cannot be read is left out and
    /// counted (`skipped`), as its fetch would be refused; its PIN is never quoted.
    pub async fn access_codes_page(
        &self,
        endpoint: CodeEndpoint,
        device_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<FetchedCode>, PageError> {
        let body = serde_json::json!({ "device_id": device_id });
        let raw = self.list_page(SeamList::of_codes(endpoint), body, cursor, limit).await?;
        let mut items = Vec::new();
        let mut skipped = 0;
        for (index, item) in raw.items.into_iter().enumerate() {
            match parse_listed::<AccessCode>(&item) {
                Ok(code) => items.push(FetchedCode { code, raw: item }),
                Err(reason) => {
                    tracing::warn!(index, %device_id, access_code_id = %listed_id(&item, "access_code_id"), %reason, "skipping an access code Seam listed that cannot be read");
                    skipped += 1;
                }
            }
        }
        Ok(Page { items, skipped, next_cursor: raw.next_cursor, limit: raw.limit, calls: raw.calls })
    }

    /// The one paged-list call every list goes through: `POST list.path()` with
    /// `body` + `limit` + `page_cursor`, paced and read within
    /// `seam.max_response_bytes`. A page over that limit is asked for again with half
    /// the `limit`, down to one item.
    async fn list_page(
        &self,
        list: SeamList,
        mut body: Value,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<RawPage, PageError> {
        let mut limit = limit.max(1);
        let mut calls = 0;
        if let Some(cursor) = cursor {
            body["page_cursor"] = cursor.into();
        }
        loop {
            body["limit"] = limit.into();
            calls += 1;
            match self.list_call(list, &body).await {
                Err(PageError::TooLarge { .. }) if limit > 1 => {
                    tracing::warn!(%list, limit, "a page over seam.max_response_bytes; asking for half as many");
                    limit /= 2;
                }
                Err(e) => return Err(e),
                Ok((items, next_cursor)) => return Ok(RawPage { items, next_cursor, limit, calls }),
            }
        }
    }

    /// One call for one page: its items and the next page's cursor.
    async fn list_call(&self, list: SeamList, body: &Value) -> Result<(Vec<Value>, Option<String>), PageError> {
        let response = self
            .send(self.http.post(format!("{}{}", self.base_url, list.path())).json(body))
            .await
            .map_err(|e| PageError::Transient { reason: e.reason(), retry_after: None, status: None })?;
        let Head { status, retry_after, request_id } = Head::of(&response);
        let page = match read_limited(response, self.max_response_bytes).await {
            Ok(bytes) => classify_page(list, status, &bytes, retry_after),
            Err(BodyError::TooLarge) if status == StatusCode::OK => {
                Err(PageError::TooLarge { max_bytes: self.max_response_bytes, request_id: None })
            }
            Err(BodyError::TooLarge) => Err(PageError::Transient {
                reason: format!("HTTP {status}: {}", too_large(self.max_response_bytes)),
                retry_after,
                status: Some(status.as_u16()),
            }),
            Err(BodyError::Transport(e)) => Err(PageError::Transient {
                reason: describe_transport_error(e),
                retry_after,
                status: Some(status.as_u16()),
            }),
        };
        page.map_err(|e| e.traced(request_id.as_ref()))
    }
}

/// A list answer: its items and next cursor, or why there are none.
fn classify_page(
    list: SeamList,
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<(Vec<Value>, Option<String>), PageError> {
    let code = status.as_u16();
    match code {
        200 => parse_page(list, body).map_err(|reason| PageError::Transient {
            reason: format!("the {} answer {reason}", list.path()),
            retry_after: None,
            status: Some(200),
        }),
        404 if is_seam_not_found(body) => Err(PageError::NotFound { message: seam_error_text(body) }),
        404 => Err(PageError::Transient {
            reason: format!(
                "HTTP 404 without Seam's not_found error (is SEAM_API_URL right?): {}",
                seam_error_text(body)
            ),
            retry_after: None,
            status: Some(404),
        }),
        401 | 403 => Err(PageError::KeyRejected { status: code, message: seam_error_text(body) }),
        408 | 429 => Err(PageError::Transient { reason: format!("HTTP {status}"), retry_after, status: Some(code) }),
        400..=499 => Err(PageError::Rejected { status: code, message: seam_error_text(body) }),
        _ => Err(PageError::Transient {
            reason: format!("HTTP {status}: {}", seam_error_text(body)),
            retry_after,
            status: Some(code),
        }),
    }
}

#[derive(Deserialize)]
struct Pagination {
    #[serde(default)]
    has_next_page: bool,
    #[serde(default)]
    next_page_cursor: Option<String>,
}

/// The items of a 200 list answer and the next page's cursor (`None`: this was the
/// last page, also when the answer has no `pagination`). Errors never quote it.
fn parse_page(list: SeamList, body: &[u8]) -> Result<(Vec<Value>, Option<String>), String> {
    let mut answer: Value = serde_json::from_slice(body).map_err(|e| describe_json_error(&e))?;
    let items = match answer.get_mut(list.field()).map(Value::take) {
        Some(Value::Array(items)) => items,
        _ => return Err(format!("has no `{}` list", list.field())),
    };
    let pagination = match answer.get_mut("pagination").map(Value::take) {
        None | Some(Value::Null) => None,
        Some(pagination) => Some(
            serde_json::from_value::<Pagination>(pagination)
                .map_err(|_| "has a `pagination` of the wrong shape".to_owned())?,
        ),
    };
    match pagination {
        Some(Pagination { has_next_page: true, next_page_cursor: Some(cursor) }) if !cursor.is_empty() => {
            Ok((items, Some(cursor)))
        }
        Some(Pagination { has_next_page: true, .. }) => Err("says it has a next page but gives no cursor".to_owned()),
        _ => Ok((items, None)),
    }
}

/// One listed item, typed; an error says where, never what (a mistyped `code` is the PIN).
fn parse_listed<T: serde::de::DeserializeOwned>(item: &Value) -> Result<T, String> {
    let bytes = serde_json::to_vec(item).map_err(|e| format!("it {}", describe_json_error(&e)))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("it {}", describe_json_error(&e)))
}

/// An item's id for a log line, when it has a readable one.
fn listed_id(item: &Value, field: &str) -> String {
    item.get(field).and_then(Value::as_str).map_or_else(|| "-".to_owned(), |id| bounded(id, MAX_QUOTED_ID))
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
    fn the_request_id_is_read_from_its_header_and_only_a_plain_bounded_one_is_kept() {
        let mut headers = HeaderMap::new();
        assert_eq!(RequestId::of(&headers), None, "no header, no id");
        headers.insert(REQUEST_ID_HEADER, "req_abc123".parse().unwrap());
        assert_eq!(RequestId::of(&headers).unwrap().as_str(), "req_abc123");
        headers.insert("Seam-Request-Id", "7b6c2a4e-0000-4000-8000-000000000001".parse().unwrap());
        assert_eq!(RequestId::of(&headers).unwrap().to_string(), "7b6c2a4e-0000-4000-8000-000000000001");
        let longest = "r".repeat(MAX_REQUEST_ID);
        assert_eq!(RequestId::parse(longest.as_bytes()).unwrap().as_str(), longest);
        // Bytes a header may carry (obs-text) but that are not a plain id.
        headers.insert(REQUEST_ID_HEADER, reqwest::header::HeaderValue::from_bytes(b"r\xe9q_1").unwrap());
        assert_eq!(RequestId::of(&headers), None);
        let too_long = "r".repeat(MAX_REQUEST_ID + 1);
        let hostile: [&[u8]; 8] = [
            b"req_1\nERROR forged log line",
            b"req_1\r\nset-cookie: x",
            b"req_1\x1b[31m",
            b"req 1",
            b"req_1\t",
            "r\u{e9}q_1".as_bytes(),
            b"",
            too_long.as_bytes(),
        ];
        for value in hostile {
            assert_eq!(RequestId::parse(value), None, "{:?}", String::from_utf8_lossy(value));
        }
        let long = "req_".repeat(10_000);
        assert_eq!(RequestId::parse(long.as_bytes()), None, "a very long value is dropped, not cut");
    }

    #[test]
    fn every_failure_names_the_request_and_successes_are_left_alone() {
        let id = RequestId::parse(b"req_abc123");
        let id = id.as_ref();
        let suffix = " (seam-request-id: req_abc123)";
        let none = None;
        let failures = [
            classify(StatusCode::INTERNAL_SERVER_ERROR, b"", none, "a"),
            classify(StatusCode::UNAUTHORIZED, br#"{"error":{"type":"unauthorized","message":"no"}}"#, none, "a"),
            classify(
                StatusCode::BAD_REQUEST,
                br#"{"error":{"type":"invalid_input","message":"code 905531"}}"#,
                none,
                "a",
            ),
            classify(StatusCode::OK, b"{}", none, "a"),
        ];
        for outcome in failures {
            let text = match outcome.traced(id) {
                FetchOutcome::Transient { reason, .. } => reason,
                FetchOutcome::KeyRejected { message, .. } | FetchOutcome::Rejected { message, .. } => message,
                other => panic!("{other:?}"),
            };
            assert!(text.ends_with(suffix) && !text.contains("905531"), "{text}");
        }
        let found = classify(StatusCode::OK, br#"{"access_code":{"access_code_id":"a","status":"set"}}"#, none, "a");
        assert_eq!(found.clone().traced(id), found);
        assert_eq!(FetchOutcome::Gone.traced(id), FetchOutcome::Gone);
        let untraced = classify(StatusCode::BAD_GATEWAY, b"", none, "a");
        assert_eq!(untraced.clone().traced(None), untraced, "no id, no suffix");

        let list_failures = [
            ListError::Failed("HTTP 500".into()),
            ListError::KeyRejected { status: 401, message: "unauthorized: no".into() },
            ListError::TooLarge { max_bytes: 10, request_id: None },
        ];
        for error in list_failures {
            let text = error.traced(id).to_string();
            assert!(text.ends_with(suffix), "{text}");
        }
        let page_failures = [
            classify_page(SeamList::Devices, StatusCode::SERVICE_UNAVAILABLE, b"", None),
            classify_page(SeamList::Devices, StatusCode::FORBIDDEN, b"", None),
            classify_page(SeamList::Devices, StatusCode::BAD_REQUEST, b"", None),
            classify_page(
                SeamList::AccessCodes,
                StatusCode::NOT_FOUND,
                br#"{"error":{"type":"device_not_found"}}"#,
                None,
            ),
            classify_page(SeamList::Devices, StatusCode::OK, b"[]", None),
            Err(PageError::TooLarge { max_bytes: 10, request_id: None }),
        ];
        for error in page_failures {
            let text = error.unwrap_err().traced(id).to_string();
            assert!(text.ends_with(suffix), "{text}");
        }
    }

    #[test]
    fn a_shortened_error_keeps_its_request_id_whole() {
        let long =
            traced(format!("HTTP 400: invalid_input: {}", "m".repeat(300)), RequestId::parse(b"req_abc123").as_ref());
        let short = shortened_keeping_request_id(&long, 40);
        assert!(short.ends_with("… (seam-request-id: req_abc123)"), "{short}");
        assert_eq!(short.chars().count(), 40 + 1 + " (seam-request-id: req_abc123)".len());
        assert_eq!(shortened_keeping_request_id("HTTP 500", 40), "HTTP 500");
        assert_eq!(shortened_keeping_request_id(&"x".repeat(50), 40), format!("{}…", "x".repeat(40)));
        assert_eq!(shortened_keeping_request_id("line\nbreak", 40), "line break");
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

    #[test]
    fn list_pages_follow_the_cursor_while_there_is_a_next_page() {
        let ok = StatusCode::OK;
        let body = br#"{"access_codes":[{"access_code_id":"a"}],"pagination":{"has_next_page":true,"next_page_cursor":"c2","next_page_url":null},"ok":true}"#;
        let (items, next) = classify_page(SeamList::AccessCodes, ok, body, None).unwrap();
        assert_eq!((items.len(), next.as_deref()), (1, Some("c2")));
        let last = br#"{"access_codes":[],"pagination":{"has_next_page":false,"next_page_cursor":"ignored","next_page_url":null},"ok":true}"#;
        assert_eq!(classify_page(SeamList::AccessCodes, ok, last, None).unwrap(), (vec![], None));
        let without_pagination = br#"{"devices":[{"device_id":"d"}],"ok":true}"#;
        assert_eq!(classify_page(SeamList::Devices, ok, without_pagination, None).unwrap().1, None);
        let no_cursor = br#"{"devices":[],"pagination":{"has_next_page":true,"next_page_cursor":null},"ok":true}"#;
        assert!(matches!(
            classify_page(SeamList::Devices, ok, no_cursor, None),
            Err(PageError::Transient { status: Some(200), .. })
        ));
        let wrong_list = br#"{"devices":[],"ok":true}"#;
        assert!(classify_page(SeamList::AccessCodes, ok, wrong_list, None).is_err());
    }

    #[test]
    fn list_failures_are_classified_like_fetches() {
        let list = SeamList::UnmanagedAccessCodes;
        let kind = |status: u16, body: &[u8]| {
            classify_page(list, StatusCode::from_u16(status).unwrap(), body, None).unwrap_err().kind()
        };
        assert_eq!(kind(401, br#"{"error":{"type":"unauthorized","message":"no"}}"#), PageKind::KeyRejected);
        assert_eq!(kind(403, b""), PageKind::KeyRejected);
        assert_eq!(kind(429, b""), PageKind::Transient);
        assert_eq!(kind(503, b""), PageKind::Transient);
        assert_eq!(kind(400, br#"{"error":{"type":"invalid_input","message":"bad"}}"#), PageKind::Rejected);
        assert_eq!(kind(404, br#"{"error":{"type":"device_not_found","message":"gone"}}"#), PageKind::NotFound);
        assert_eq!(kind(404, b"<html>no route</html>"), PageKind::Transient, "a 404 that is not Seam's");
    }

    #[test]
    fn no_list_failure_and_no_skipped_code_quotes_a_pin() {
        let pin = "905531";
        let bodies: [(u16, &[u8]); 3] = [
            (200, br#"{"access_codes":[{"access_code_id":"a","code":"905531""#),
            (400, br#"{"error":{"type":"invalid_input","message":"code 905531 rejected"},"ok":false}"#),
            (500, br#"{"code":"905531"}"#),
        ];
        for (status, body) in bodies {
            let error = classify_page(SeamList::AccessCodes, StatusCode::from_u16(status).unwrap(), body, None);
            let text = format!("{:?}", error.unwrap_err());
            assert!(!text.contains(pin), "{text}");
        }
        // A listed code whose PIN is mistyped is skipped; the reason says where, not what.
        let item = serde_json::json!({"access_code_id": "a", "status": "set", "code": 905531});
        let reason = parse_listed::<AccessCode>(&item).unwrap_err();
        assert!(!reason.contains(pin) && reason.contains("wrong type"), "{reason}");
    }
}
