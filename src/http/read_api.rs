//! The read API under `/v1`: the mirror as JSON for products that would rather ask
//! over HTTP than query Postgres. Bearer-token protected; off (404) when no token
//! is configured.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::types::Json as Jsonb;
use sqlx::{Postgres, QueryBuilder};
use subtle::ConstantTimeEq;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Object, Required};
use utoipa::{Modify, OpenApi, ToSchema};

use super::AppState;
use crate::store::console::CodeFilter;

/// The configured tokens, kept as SHA-256 digests and compared in constant time.
#[derive(Clone)]
pub struct ApiTokens(Arc<Vec<[u8; 32]>>);

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiTokens([{} redacted])", self.0.len())
    }
}

impl ApiTokens {
    /// None when no token is configured: the read API is then off.
    pub fn new(tokens: &[String]) -> Option<ApiTokens> {
        (!tokens.is_empty()).then(|| ApiTokens(Arc::new(tokens.iter().map(|t| digest(t)).collect())))
    }

    /// Whether `headers` carry `Authorization: Bearer <one of the tokens>`.
    pub fn authorize(&self, headers: &axum::http::HeaderMap) -> bool {
        let presented = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token);
        presented.is_some_and(|token| self.accepts(token))
    }

    /// The SHA-256 digests of the tokens (the console derives its session keys from them).
    pub(crate) fn digests(&self) -> &[[u8; 32]] {
        &self.0
    }

    /// Whether `candidate` is one of the tokens: the index of the one it is.
    pub(crate) fn position(&self, candidate: &str) -> Option<usize> {
        constant_time_position(&self.0, &digest(candidate))
    }

    fn accepts(&self, candidate: &str) -> bool {
        self.position(candidate).is_some()
    }
}

/// The index of `candidate` in `list`: every entry is compared, without a branch on
/// the comparisons, so timing tells nothing about which one (if any) matched.
pub(crate) fn constant_time_position(list: &[[u8; 32]], candidate: &[u8]) -> Option<usize> {
    use subtle::ConditionallySelectable;
    let (mut index, mut found) = (0u64, subtle::Choice::from(0));
    for (i, entry) in list.iter().enumerate() {
        let equal = entry.ct_eq(candidate);
        index = u64::conditional_select(&index, &(i as u64), equal);
        found |= equal;
    }
    bool::from(found).then_some(index as usize)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Rejects requests without a configured bearer token.
pub async fn require_token(State(tokens): State<ApiTokens>, request: Request, next: Next) -> Response {
    if tokens.authorize(request.headers()) { next.run(request).await } else { ApiError::Unauthorized.into_response() }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is
/// case-insensitive (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("invalid `{parameter}`: {message}")]
    BadParameter { parameter: String, message: String },
    #[error("no such access code")]
    NotFound,
    /// Postgres refused a value of the request itself (SQLSTATE class 22, e.g. a
    /// character the database's encoding cannot hold): the request's fault, not an
    /// outage. The checks of each input should leave nothing for this to catch.
    #[error("the database cannot hold a value of this request")]
    Refused { parameter: Option<&'static str>, source: sqlx::Error },
    #[error("database unavailable")]
    Database(sqlx::Error),
    #[error("too many change streams are open (api.max_change_streams); retry later")]
    TooManyStreams { retry_after_seconds: u32 },
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> ApiError {
        if crate::store::is_data_error(&error) {
            ApiError::Refused { parameter: None, source: error }
        } else {
            ApiError::Database(error)
        }
    }
}

/// For a query whose only input is `parameter`: a data error names it.
fn blaming(parameter: &'static str) -> impl Fn(sqlx::Error) -> ApiError {
    move |error| match ApiError::from(error) {
        ApiError::Refused { source, .. } => ApiError::Refused { parameter: Some(parameter), source },
        other => other,
    }
}

/// What every error answers: `{error, message, parameter?}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiErrorBody {
    pub error: ErrorCode,
    /// For people; may change.
    pub message: String,
    /// With `invalid_parameter`: the query or path parameter at fault, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub parameter: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    InvalidParameter,
    NotFound,
    DatabaseUnavailable,
    /// The request outlived `server.request_timeout_ms`.
    RequestTimeout,
    /// `api.max_change_streams` change streams are open already.
    TooManyStreams,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = match &self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            ApiError::BadParameter { .. } => (StatusCode::BAD_REQUEST, ErrorCode::InvalidParameter),
            ApiError::NotFound => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::Refused { source, .. } => {
                tracing::warn!(error = %source, "read API: the database refused a value of the request; answering 400");
                (StatusCode::BAD_REQUEST, ErrorCode::InvalidParameter)
            }
            ApiError::Database(e) => {
                tracing::error!(error = %e, "read API: database failed");
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::DatabaseUnavailable)
            }
            ApiError::TooManyStreams { .. } => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::TooManyStreams),
        };
        let parameter = match &self {
            ApiError::BadParameter { parameter, .. } => Some(parameter.clone()),
            ApiError::Refused { parameter, .. } => parameter.map(str::to_owned),
            _ => None,
        };
        let body = ApiErrorBody { error, message: self.to_string(), parameter };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::TooManyStreams { retry_after_seconds } = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
        }
        response
    }
}

pub(crate) fn bad(parameter: &str, message: impl Into<String>) -> ApiError {
    ApiError::BadParameter { parameter: parameter.to_owned(), message: message.into() }
}

/// One access code as mirrored.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AccessCodeView {
    pub access_code_id: String,
    pub device_id: Option<String>,
    pub workspace_id: Option<String>,
    pub name: Option<String>,
    /// `ongoing` or `time_bound`.
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub kind: Option<String>,
    /// `setting`, `set`, `unset`, `removing`, `unknown`; null for a code deleted before any fetch.
    pub status: Option<String>,
    pub is_managed: bool,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    /// As Seam returns them: `{warning_code, message, …}`.
    #[schema(value_type = Vec<Object>)]
    pub warnings: Jsonb<Value>,
    /// As Seam returns them: `{error_code, message, is_*_error, …}`.
    #[schema(value_type = Vec<Object>)]
    pub errors: Jsonb<Value>,
    /// The PIN: present only when the service stores PINs (`store_pins`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub last_event_id: Option<String>,
    pub last_event_type: Option<String>,
    pub last_event_occurred_at: Option<DateTime<Utc>>,
    pub fetched_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The connected account of the code's device (from events and the device list).
    pub connected_account_id: Option<String>,
    /// When Seam created the code (Seam's `created_at`).
    pub created_at: Option<DateTime<Utc>>,
    /// Seam's flags, null when Seam did not say.
    pub is_backup: Option<bool>,
    pub is_backup_access_code_available: Option<bool>,
    pub pulled_backup_access_code_id: Option<String>,
    /// For a backup code (`is_backup`): the code it was pulled for (that code's
    /// `pulled_backup_access_code_id` names this one).
    pub backup_of_access_code_id: Option<String>,
    pub is_offline_access_code: Option<bool>,
    pub is_one_time_use: Option<bool>,
    pub is_waiting_for_code_assignment: Option<bool>,
    pub is_scheduled_on_device: Option<bool>,
    /// Changes Seam is still pushing to the device: `{mutation_code, message, created_at, …}`.
    #[schema(value_type = Vec<Object>)]
    pub pending_mutations: Jsonb<Value>,
}

/// The columns of `AccessCodeView`, for the list's query builder; `get_access_code`
/// names them itself (checked at compile time against the struct).
const VIEW_COLUMNS: &str = "access_code_id, device_id, workspace_id, name, type, status, is_managed, starts_at, \
     ends_at, warnings, errors, code, deleted_at, last_event_id, last_event_type, last_event_occurred_at, \
     fetched_at, updated_at, connected_account_id, seam_created_at AS created_at, is_backup, \
     is_backup_access_code_available, pulled_backup_access_code_id, backup_of_access_code_id, \
     is_offline_access_code, is_one_time_use, is_waiting_for_code_assignment, is_scheduled_on_device, pending_mutations";

#[derive(Debug, Serialize, ToSchema)]
pub struct AccessCodePage {
    pub access_codes: Vec<AccessCodeView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    /// `created`, `changed` or `deleted`.
    pub change: String,
    /// For `changed`: what changed, of `status_changed`, `warnings_changed`,
    /// `errors_changed`, `name_changed`, `time_frame_changed`, `code_changed` (the
    /// PIN changed; never its value), `backup_pulled` (a backup code was pulled for it).
    pub changes: Vec<String>,
    /// `fetch` (one code fetched from Seam) or `import` (a device's code list).
    pub origin: String,
    pub previous_status: Option<String>,
    pub status: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub warnings: Jsonb<Value>,
    #[schema(value_type = Vec<Object>)]
    pub errors: Jsonb<Value>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub event_occurred_at: Option<DateTime<Utc>>,
    pub fetched_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventSummary {
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccessCodeDetail {
    #[serde(flatten)]
    pub access_code: AccessCodeView,
    /// Every change (creation, deletion; status, warnings, errors, name, time frame, PIN), oldest first.
    pub history: Vec<HistoryEntry>,
    /// The 50 most recent events for the code, newest first.
    pub recent_events: Vec<EventSummary>,
    /// The backup code pulled for this code (`pulled_backup_access_code_id`), as
    /// mirrored: null when none was pulled; only its id until it is mirrored.
    pub backup_access_code: Option<BackupCodeSummary>,
    /// This service's pull of a backup for this code (`backup.pull_on_failure` or
    /// `seam-access-sync pull-backup`); null when it never decided to pull.
    pub backup_pull: Option<BackupPullView>,
}

/// A backup code, as the detail of the code it was pulled for shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupCodeSummary {
    pub access_code_id: String,
    /// False until the backup code itself is mirrored (it is fetched at once).
    pub mirrored: bool,
    pub status: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// The backup's PIN: present only when the service stores PINs (`store_pins`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// The service's decision to pull a backup code, and how it ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupPullView {
    /// `failed_to_set_on_device`, `not_set_after_start` or `by_hand`.
    pub reason: String,
    /// `decided`, `sending` (the call is being made, or its answer was lost: the
    /// code is fetched again before any new call), `pulled` or `failed`.
    pub state: String,
    pub attempts: i32,
    pub backup_access_code_id: Option<String>,
    /// Why the last attempt failed, in Seam's words when Seam answered.
    pub last_error: Option<String>,
    pub decided_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Filters for `GET /v1/access_codes`; all optional, combined with AND. Kept as
/// text: each is checked by its rule below, which names it when it is wrong.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub device_id: Option<String>,
    pub workspace_id: Option<String>,
    pub has_errors: Option<String>,
    pub has_warnings: Option<String>,
    pub deleted: Option<String>,
    pub updated_since: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

// What the read API accepts. Each input has one rule, here as a check for the
// handlers and as a JSON Schema for the OpenAPI document, side by side: every value
// the schema allows passes the check, every value it forbids answers 400 naming the
// input, and nothing Postgres cannot store (NUL above all) reaches the database.
// `scripts/schemathesis` holds the two to each other.

/// Longest id (path `access_code_id`, `device_id`), in characters. The webhook
/// stores ids of at most 255 bytes, so a longer one cannot match.
pub const ID_MAX_CHARS: usize = 255;

/// Anything but NUL, which Postgres cannot store in text.
const NO_NUL_PATTERN: &str = r"^[^\u0000]*$";

/// The statuses Seam gives access codes (the `status` filter).
pub const STATUSES: [&str; 5] = ["setting", "set", "unset", "removing", "unknown"];

/// Page size without `limit` (or `api.max_page_size` when that is smaller).
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// Longest cursor: that of an id of `ID_MAX_CHARS` characters of 4 bytes each.
pub const CURSOR_MAX_CHARS: usize = (ID_MAX_CHARS * 4 * 4).div_ceil(3);

/// An id: 1 to `ID_MAX_CHARS` characters (counted as JSON Schema counts them,
/// in code points), no NUL.
pub(crate) fn id_input<'a>(parameter: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.contains('\0') {
        return Err(bad(parameter, "must not contain a NUL character"));
    }
    let length = value.chars().count();
    if length == 0 || length > ID_MAX_CHARS {
        return Err(bad(parameter, format!("expected 1 to {ID_MAX_CHARS} characters")));
    }
    Ok(value)
}

fn id_schema(description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(ID_MAX_CHARS))
        .pattern(Some(NO_NUL_PATTERN))
        .description(Some(description))
        .build()
}

pub(crate) fn status_input(value: &str) -> Result<&str, ApiError> {
    STATUSES
        .contains(&value)
        .then_some(value)
        .ok_or_else(|| bad("status", format!("expected one of {}", STATUSES.join(", "))))
}

fn status_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(STATUSES))
        .description(Some("Only codes with this status."))
        .build()
}

/// `true` or `false`, as JSON writes them.
pub(crate) fn bool_input(parameter: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(parameter, "expected `true` or `false`")),
    }
}

fn bool_schema(description: &str) -> Object {
    ObjectBuilder::new().schema_type(Type::Boolean).description(Some(description)).build()
}

/// A decimal integer from 1 to `max`, written plainly: no sign, no leading zero.
fn limit_input(value: &str, max: u32) -> Result<u32, ApiError> {
    let plain = !value.is_empty() && !value.starts_with('0') && value.bytes().all(|b| b.is_ascii_digit());
    plain
        .then(|| value.parse::<u32>().ok())
        .flatten()
        .filter(|limit| (1..=max).contains(limit))
        .ok_or_else(|| bad("limit", format!("expected an integer from 1 to {max}")))
}

fn limit_schema(max: u32) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
        .minimum(Some(1))
        .maximum(Some(max))
        .default(Some(json!(DEFAULT_PAGE_SIZE.min(max))))
        .description(Some(format!("Page size, 1 to {max} (`api.max_page_size`).")))
        .build()
}

/// An RFC 3339 `date-time` (section 5.6), as JSON Schema's `format: date-time`
/// reads it: `T` or `t`, `Z` or `z` or a `±hh:mm` offset, any number of fraction
/// digits, a real date and time, and second 60 only at 23:59 UTC (a leap second).
fn time_input(parameter: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    let wrong = || bad(parameter, "expected an RFC 3339 time like 2026-11-25T10:00:00Z");
    if !has_rfc3339_form(value) {
        return Err(wrong());
    }
    let time = DateTime::parse_from_rfc3339(value).map_err(|_| wrong())?.with_timezone(&Utc);
    let leap_second = value.get(17..19) == Some("60");
    if leap_second {
        use chrono::Timelike;
        if (time.hour(), time.minute()) != (23, 59) {
            return Err(wrong());
        }
    }
    Ok(time)
}

/// The shape of RFC 3339's `date-time`, digits where digits go; chrono checks the
/// ranges (it also accepts shapes RFC 3339 does not, such as a space for `T`).
fn has_rfc3339_form(value: &str) -> bool {
    let b = value.as_bytes();
    let digits = |at: usize, count: usize| b.get(at..at + count).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    let date_and_time = digits(0, 4)
        && at(4, b"-")
        && digits(5, 2)
        && at(7, b"-")
        && digits(8, 2)
        && at(10, b"Tt")
        && digits(11, 2)
        && at(13, b":")
        && digits(14, 2)
        && at(16, b":")
        && digits(17, 2);
    if !date_and_time {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let count = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if count == 0 {
            return false;
        }
        rest = &fraction[count..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', offset @ ..] => {
            offset.len() == 5 && offset[2] == b':' && [0, 1, 3, 4].iter().all(|&i| offset[i].is_ascii_digit())
        }
        _ => false,
    }
}

fn time_schema(description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .description(Some(description))
        .build()
}

/// A cursor is the unpadded base64url (RFC 4648 §5) of the last id of a page. The
/// id after it is taken as it decodes: bytes that are not UTF-8 become U+FFFD (an
/// odd cursor is just a position), but a NUL byte, which Postgres cannot store, is
/// refused, as are a non-canonical last digit and anything over `CURSOR_MAX_CHARS`.
fn cursor_input(value: &str) -> Result<String, ApiError> {
    let wrong = |why: &str| bad("cursor", format!("not a cursor this API returned: {why}"));
    if value.len() > CURSOR_MAX_CHARS {
        return Err(wrong("too long"));
    }
    let bytes = URL_SAFE_NO_PAD.decode(value).map_err(|_| wrong("not unpadded base64url"))?;
    if bytes.is_empty() {
        return Err(wrong("empty"));
    }
    if bytes.contains(&0) {
        return Err(wrong("it holds a NUL character"));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn encode_cursor(access_code_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(access_code_id)
}

fn cursor_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(2))
        .max_length(Some(CURSOR_MAX_CHARS))
        .pattern(Some(cursor_pattern()))
        .description(Some("`next_cursor` of the previous page: unpadded base64url of 1 or more bytes, none of them 0."))
        .build()
}

/// The base64url digits, in the order of their values.
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The regular expression of exactly the strings `cursor_input` decodes, length
/// aside: groups of 4 digits (3 bytes), then 2 digits (1 byte) or 3 (2 bytes) or
/// none; in each, no byte is 0, and the bits past the last byte are 0 (canonical).
fn cursor_pattern() -> String {
    format!("^(?:{})*(?:{}|{})?$", cursor_digits(0, 4, false), cursor_digits(0, 2, false), cursor_digits(0, 3, false))
}

/// The digits `at..count` of a group of `count` digits. Digit `i` gives its high
/// bits (`>> HIGH_SHIFT[i]`) to byte `i - 1` and its low bits (`& LOW_MASK[i]`) to
/// byte `i`; a byte is 0 when both halves are, so a digit after one whose low bits
/// are 0 needs high bits that are not.
fn cursor_digits(at: usize, count: usize, previous_low_zero: bool) -> String {
    const HIGH_SHIFT: [u8; 4] = [6, 4, 2, 0];
    const LOW_MASK: [u8; 4] = [63, 15, 3, 0];
    let last = at + 1 == count;
    let mut branches = Vec::new();
    for low_zero in [true, false] {
        // The last digit's low bits belong to no byte: they must be 0.
        if last && !low_zero {
            continue;
        }
        let class = base64url_class(|value| {
            (!previous_low_zero || value >> HIGH_SHIFT[at] != 0) && (value & LOW_MASK[at] == 0) == low_zero
        });
        if let Some(class) = class {
            let rest = if last { String::new() } else { cursor_digits(at + 1, count, low_zero) };
            branches.push(format!("{class}{rest}"));
        }
    }
    match branches.as_slice() {
        [one] => one.clone(),
        _ => format!("(?:{})", branches.join("|")),
    }
}

/// A character class of the base64url digits whose value passes `keep`, with runs
/// written as ranges (or the digit itself when only one does); None when none does.
fn base64url_class(keep: impl Fn(u8) -> bool) -> Option<String> {
    let mut digits: Vec<u8> =
        (0..64u8).filter(|&value| keep(value)).map(|value| BASE64URL[usize::from(value)]).collect();
    if digits.is_empty() {
        return None;
    }
    if let [digit] = digits[..] {
        return Some(char::from(digit).to_string());
    }
    digits.sort_unstable();
    // `-` last, where it stands for itself.
    let dash = digits.contains(&b'-');
    digits.retain(|&d| d != b'-');
    let mut class = String::from("[");
    let mut i = 0;
    while i < digits.len() {
        let mut j = i;
        while j + 1 < digits.len() && digits[j + 1] == digits[j] + 1 {
            j += 1;
        }
        if j >= i + 2 {
            class.push_str(&format!("{}-{}", char::from(digits[i]), char::from(digits[j])));
        } else {
            class.extend(digits[i..=j].iter().map(|&d| char::from(d)));
        }
        i = j + 1;
    }
    if dash {
        class.push('-');
    }
    class.push(']');
    Some(class)
}

fn query_parameter(name: &str, schema: Object) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .schema(Some(schema))
        .build()
}

/// The query parameters of `GET /v1/access_codes`, as `ListQuery`'s checks take them.
fn list_parameters(max_page_size: u32) -> Vec<Parameter> {
    vec![
        query_parameter("status", status_schema()),
        query_parameter("device_id", id_schema("Only codes of this device.")),
        query_parameter("workspace_id", id_schema("Only codes of this Seam workspace.")),
        query_parameter("has_errors", bool_schema("`true`: only codes with errors; `false`: only codes without.")),
        query_parameter("has_warnings", bool_schema("`true`: only codes with warnings; `false`: only codes without.")),
        query_parameter("deleted", bool_schema("`true`: only deleted codes; `false`: only codes that still exist.")),
        query_parameter("updated_since", time_schema("Only codes whose row changed at or after this time.")),
        query_parameter("limit", limit_schema(max_page_size)),
        query_parameter("cursor", cursor_schema()),
    ]
}

fn access_code_id_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("access_code_id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .schema(Some(id_schema("Seam's access code id.")))
        .build()
}

/// List mirrored access codes, filtered, in pages ordered by `access_code_id`.
// Parameters: `list_parameters`, set by `document` (`limit` follows the configuration).
#[utoipa::path(
    get,
    path = "/v1/access_codes",
    responses(
        (status = 200, description = "A page of access codes", body = AccessCodePage),
        (status = 400, description = "A query parameter is invalid (named in `parameter`)", body = ApiErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ApiErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 431, description = "The request line and headers exceed `server.max_header_bytes` (16 KiB) \
            or `server.max_headers` (64): refused before it is read, without a body"),
        (status = 503, description = "The database is failing, or the request took too long", body = ApiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_access_codes(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<AccessCodePage>, ApiError> {
    let Query(query) = query.map_err(|e| bad(&rejected_parameter(&e.body_text()), e.body_text()))?;
    let max = state.settings.api.max_page_size;
    let limit = query.limit.as_deref().map(|v| limit_input(v, max)).transpose()?.unwrap_or(DEFAULT_PAGE_SIZE.min(max));
    let after = query.cursor.as_deref().map(cursor_input).transpose()?;
    let updated_since = query.updated_since.as_deref().map(|v| time_input("updated_since", v)).transpose()?;
    let status = query.status.as_deref().map(status_input).transpose()?;
    let device_id = query.device_id.as_deref().map(|v| id_input("device_id", v)).transpose()?;
    let workspace_id = query.workspace_id.as_deref().map(|v| id_input("workspace_id", v)).transpose()?;
    let has_errors = query.has_errors.as_deref().map(|v| bool_input("has_errors", v)).transpose()?;
    let has_warnings = query.has_warnings.as_deref().map(|v| bool_input("has_warnings", v)).transpose()?;
    let deleted = query.deleted.as_deref().map(|v| bool_input("deleted", v)).transpose()?;

    let filter = CodeFilter {
        status: status.map(str::to_owned),
        has_errors,
        has_warnings,
        deleted,
        device_id: device_id.map(str::to_owned),
        workspace_id: workspace_id.map(str::to_owned),
        search: None,
    };
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(format!("SELECT {VIEW_COLUMNS} FROM access_codes a"));
    crate::store::console::push_filter(&mut sql, &filter);
    if let Some(since) = updated_since {
        sql.push(" AND a.updated_at >= ").push_bind(since);
    }
    if let Some(after) = &after {
        sql.push(" AND a.access_code_id > ").push_bind(after);
    }
    sql.push(" ORDER BY a.access_code_id LIMIT ").push_bind(i64::from(limit) + 1);
    let mut rows: Vec<AccessCodeView> = sql.build_query_as().fetch_all(&state.pool).await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|last| encode_cursor(&last.access_code_id))
    } else {
        None
    };
    let store_pins = state.settings.store_pins;
    let access_codes = rows.into_iter().map(|row| hide_pin(row, store_pins)).collect();
    Ok(Json(AccessCodePage { access_codes, next_cursor }))
}

/// serde names the offending field in its message: "unknown field `x`, expected …".
fn rejected_parameter(message: &str) -> String {
    message.split('`').nth(1).unwrap_or("query").to_owned()
}

fn hide_pin(mut view: AccessCodeView, store_pins: bool) -> AccessCodeView {
    if !store_pins {
        view.code = None;
    }
    view
}

/// One access code with its history and recent events.
// Parameters: `access_code_id_parameter`, set by `document`.
#[utoipa::path(
    get,
    path = "/v1/access_codes/{access_code_id}",
    responses(
        (status = 200, description = "The access code", body = AccessCodeDetail),
        (status = 400, description = "The id is invalid (`parameter`: `access_code_id`)", body = ApiErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ApiErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "Not in the mirror", body = ApiErrorBody),
        (status = 431, description = "The request line and headers exceed `server.max_header_bytes` (16 KiB) \
            or `server.max_headers` (64): refused before it is read, without a body"),
        (status = 503, description = "The database is failing, or the request took too long", body = ApiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_access_code(
    State(state): State<AppState>,
    access_code_id: Result<Path<String>, PathRejection>,
) -> Result<Json<AccessCodeDetail>, ApiError> {
    let Path(access_code_id) = access_code_id.map_err(|e| bad("access_code_id", e.body_text()))?;
    let access_code_id = id_input("access_code_id", &access_code_id)?;
    Ok(Json(access_code_detail(&state.pool, access_code_id, state.settings.store_pins).await?))
}

/// One access code with its history, recent events and backup relation, as
/// `GET /v1/access_codes/{id}` and the console's code page show it; the PIN only
/// with `store_pins`. `access_code_id` is checked (`id_input`).
pub(crate) async fn access_code_detail(
    pool: &sqlx::PgPool,
    access_code_id: &str,
    store_pins: bool,
) -> Result<AccessCodeDetail, ApiError> {
    let view = sqlx::query_as!(
        AccessCodeView,
        r#"SELECT access_code_id, device_id, workspace_id, name, type AS kind, status, is_managed, starts_at,
                ends_at, warnings AS "warnings: Jsonb<Value>", errors AS "errors: Jsonb<Value>", code, deleted_at,
                last_event_id, last_event_type, last_event_occurred_at, fetched_at, updated_at,
                connected_account_id, seam_created_at AS created_at, is_backup, is_backup_access_code_available,
                pulled_backup_access_code_id, backup_of_access_code_id, is_offline_access_code, is_one_time_use,
                is_waiting_for_code_assignment, is_scheduled_on_device,
                pending_mutations AS "pending_mutations: Jsonb<Value>"
         FROM access_codes WHERE access_code_id = $1"#,
        access_code_id,
    )
    .fetch_optional(pool)
    .await
    .map_err(blaming("access_code_id"))?;
    let view = view.ok_or(ApiError::NotFound)?;
    let history = sqlx::query_as!(
        HistoryEntry,
        r#"SELECT change, changes, origin, previous_status, status, warnings AS "warnings: Jsonb<Value>",
                errors AS "errors: Jsonb<Value>", event_id, event_type, event_occurred_at, fetched_at, created_at
         FROM access_code_history WHERE access_code_id = $1 ORDER BY id"#,
        access_code_id,
    )
    .fetch_all(pool)
    .await
    .map_err(blaming("access_code_id"))?;
    let recent_events = sqlx::query_as!(
        EventSummary,
        "SELECT event_id, event_type, occurred_at, received_at FROM seam_events
         WHERE access_code_id = $1 ORDER BY received_at DESC LIMIT 50",
        access_code_id,
    )
    .fetch_all(pool)
    .await
    .map_err(blaming("access_code_id"))?;
    let backup_access_code = match &view.pulled_backup_access_code_id {
        None => None,
        Some(backup_id) => {
            let row = sqlx::query!(
                "SELECT status, starts_at, ends_at, deleted_at, code FROM access_codes WHERE access_code_id = $1",
                backup_id,
            )
            .fetch_optional(pool)
            .await?;
            Some(match row {
                Some(row) => BackupCodeSummary {
                    access_code_id: backup_id.clone(),
                    mirrored: true,
                    status: row.status,
                    starts_at: row.starts_at,
                    ends_at: row.ends_at,
                    deleted_at: row.deleted_at,
                    code: row.code.filter(|_| store_pins),
                },
                None => BackupCodeSummary {
                    access_code_id: backup_id.clone(),
                    mirrored: false,
                    status: None,
                    starts_at: None,
                    ends_at: None,
                    deleted_at: None,
                    code: None,
                },
            })
        }
    };
    let backup_pull = sqlx::query_as!(
        BackupPullView,
        "SELECT reason, state, attempts, backup_access_code_id, last_error, decided_at, finished_at
         FROM backup_pulls WHERE access_code_id = $1",
        access_code_id,
    )
    .fetch_optional(pool)
    .await?;
    Ok(AccessCodeDetail {
        access_code: hide_pin(view, store_pins),
        history,
        recent_events,
        backup_access_code,
        backup_pull,
    })
}

/// Query of `GET /v1/changes`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    pub last_event_id: Option<String>,
}

/// The change stream: Server-Sent Events, one per change of the mirror's history.
// Parameters: `changes_parameters`, set by `document`.
#[utoipa::path(
    get,
    path = "/v1/changes",
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
            description = "An endless stream of Server-Sent Events: one per history row, oldest first, each \
            exactly once, `id:` the history id and `data:` the change notification's JSON \
            (`{access_code_id, change, changes, origin, previous_status, status, warnings, errors, event_type, \
            backup_access_code_id?, backup_of_access_code_id?}`); a `:heartbeat` comment every 15 s. Without \
            `Last-Event-ID` it starts with the next change."),
        (status = 400, description = "`Last-Event-ID` or `last_event_id` is not a history id, or an unknown \
            query parameter", body = ApiErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ApiErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 431, description = "The request line and headers exceed `server.max_header_bytes` (16 KiB) \
            or `server.max_headers` (64): refused before it is read, without a body"),
        (status = 503, description = "`api.max_change_streams` streams are open (`too_many_streams`, with \
            `Retry-After`), or the database is failing", body = ApiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn changes(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    query: Result<Query<ChangesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| bad(&rejected_parameter(&e.body_text()), e.body_text()))?;
    let start = super::changes::requested_start(&headers, query.last_event_id.as_deref())
        .map_err(|parameter| bad(parameter, "expected a history id: a decimal integer, 0 or more"))?;
    open_change_stream(&state, start).await
}

/// Opens a change stream for `/v1/changes` or the console.
pub(crate) async fn open_change_stream(state: &AppState, start: super::changes::Start) -> Result<Response, ApiError> {
    let feed = state.changes.as_ref().ok_or(ApiError::NotFound)?;
    match feed.open(start).await {
        Err(super::changes::TooManyStreams) => {
            Err(ApiError::TooManyStreams { retry_after_seconds: state.settings.server.retry_after_seconds })
        }
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(response)) => Ok(response),
    }
}

fn changes_parameters() -> Vec<Parameter> {
    let id = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^(0|[1-9][0-9]{0,17})$"))
            .description(Some("A history id (the `id:` of an event): the stream resumes after it."))
            .build()
    };
    vec![
        query_parameter("last_event_id", id()),
        ParameterBuilder::new()
            .name("Last-Event-ID")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .schema(Some(id()))
            .description(Some("As `last_event_id`, and wins over it: what an `EventSource` sends when it reconnects."))
            .build(),
    ]
}

#[derive(OpenApi)]
#[openapi(
    info(title = "seam-access-sync read API", description = "The mirror of Seam access codes kept by seam-access-sync."),
    paths(list_access_codes, get_access_code, changes),
    components(schemas(
        AccessCodeView,
        AccessCodePage,
        AccessCodeDetail,
        BackupCodeSummary,
        BackupPullView,
        HistoryEntry,
        EventSummary,
        ApiErrorBody,
        ErrorCode
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of a service whose largest page is `max_page_size`.
pub fn document(max_page_size: u32) -> utoipa::openapi::OpenApi {
    let mut openapi = ApiDoc::openapi();
    let operations = [
        ("/v1/access_codes", list_parameters(max_page_size)),
        ("/v1/access_codes/{access_code_id}", vec![access_code_id_parameter()]),
        ("/v1/changes", changes_parameters()),
    ];
    for (path, parameters) in operations {
        let operation = openapi.paths.paths.get_mut(path).and_then(|item| item.get.as_mut());
        operation.expect("the read API's operations are documented").parameters = Some(parameters);
    }
    openapi
}

/// `GET /v1/openapi.json`
pub async fn openapi(State(state): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    Json(document(state.settings.api.max_page_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What JSON Schema's `format: date-time` says of each (as the validator
    /// schemathesis uses, jsonschema-rs, answers): the check must say the same.
    #[test]
    fn times_are_accepted_exactly_as_format_date_time_accepts_them() {
        let cases = [
            ("2026-11-25T10:00:00Z", true),
            ("2026-11-25t10:00:00z", true),
            ("2026-11-25T10:00:00.123456789123Z", true),
            ("2026-11-25T10:00:00+23:59", true),
            ("2026-11-25T10:00:00-00:00", true),
            ("0000-01-01T00:00:00Z", true),
            ("0001-01-01T00:00:00+23:59", true),
            ("9999-12-31T23:59:59-23:59", true),
            ("2024-02-29T00:00:00Z", true),
            ("2026-11-25T23:59:60Z", true),
            ("2026-11-25T22:59:60-01:00", true),
            ("2026-11-25 10:00:00Z", false),
            ("2026-11-25T10:00:00", false),
            ("2026-11-25T10:00Z", false),
            ("2026-11-25T10:00:60Z", false),
            ("2026-11-25T09:59:60-00:01", false),
            ("2026-11-25T24:00:00Z", false),
            ("2026-02-29T00:00:00Z", false),
            ("2026-11-25T10:00:00.Z", false),
            ("2026-11-25T10:00:00+24:00", false),
            ("2026-11-25T10:00:00+01:60", false),
            ("2026-11-25T10:00:00+0100", false),
            ("2026-11-25T10:00:00+01", false),
            ("+2026-11-25T10:00:00Z", false),
            ("2026-1-25T10:00:00Z", false),
            ("2026-11-25T10:00:00,5Z", false),
            ("2026-11-25T10:00:00Z ", false),
            ("\u{ff12}026-11-25T10:00:00Z", false),
            ("2026-11-25T10:00:00\0Z", false),
            ("", false),
        ];
        for (value, valid) in cases {
            assert_eq!(time_input("t", value).is_ok(), valid, "{value:?}");
        }
    }

    #[test]
    fn limits_are_plain_integers_within_the_bounds() {
        for (value, expected) in [("1", Some(1)), ("50", Some(50)), ("51", None), ("0", None), ("01", None)] {
            assert_eq!(limit_input(value, 50).ok(), expected, "{value}");
        }
        for value in ["", "+5", "-1", " 5", "5 ", "1e1", "1.0", "99999999999999999999", "\u{0665}"] {
            assert!(limit_input(value, u32::MAX).is_err(), "{value:?}");
        }
    }

    #[test]
    fn a_cursor_is_the_canonical_base64url_of_an_id_without_nul() {
        for id in ["ac_a", "é", "😀", "x"] {
            assert_eq!(cursor_input(&encode_cursor(id)).unwrap(), id);
        }
        assert_eq!(cursor_input("_w").unwrap(), "\u{fffd}", "not UTF-8: a position all the same");
        let longest = encode_cursor(&"😀".repeat(ID_MAX_CHARS));
        assert_eq!(longest.len(), CURSOR_MAX_CHARS);
        assert!(cursor_input(&longest).is_ok());
        for value in ["", "A", "AA", "AAE", "QUFBAA", "QR", "QQ==", "QQ=", "Q+", "Q/", "%%%", &format!("{longest}QQ")] {
            assert!(cursor_input(value).is_err(), "{value:?}");
        }
    }

    #[test]
    fn ids_are_1_to_255_characters_without_nul() {
        assert!(id_input("id", &"é".repeat(ID_MAX_CHARS)).is_ok(), "characters, not bytes");
        assert!(id_input("id", " ").is_ok());
        assert!(id_input("id", "\u{1}").is_ok());
        for value in [String::new(), "a\0b".into(), "x".repeat(ID_MAX_CHARS + 1)] {
            assert!(id_input("id", &value).is_err(), "{value:?}");
        }
    }

    #[test]
    fn the_cursor_pattern_is_built_from_classes_of_base64url_digits() {
        assert_eq!(base64url_class(|v| v == 0).as_deref(), Some("A"));
        assert_eq!(base64url_class(|v| v % 16 == 0 && v != 0).as_deref(), Some("[Qgw]"));
        assert_eq!(base64url_class(|v| v >= 62).as_deref(), Some("[_-]"));
        assert_eq!(base64url_class(|_| false), None);
        // 1 byte: two digits, the second one's low 4 bits 0, not both 0 ("AA" is a NUL).
        assert_eq!(cursor_digits(0, 2, false), "(?:A[Qgw]|[0-9B-Z_a-z-][AQgw])");
    }
}
