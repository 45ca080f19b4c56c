//! The read API under `/v1`: the mirror as JSON for products that would rather ask
//! over HTTP than query Postgres. Bearer-token protected; off (404) when no token
//! is configured.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
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
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use super::AppState;

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

    pub fn accepts(&self, candidate: &str) -> bool {
        let candidate = digest(candidate);
        // Every token is compared, so timing tells nothing about which one matched.
        self.0.iter().fold(subtle::Choice::from(0), |found, token| found | token.ct_eq(&candidate)).into()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Rejects requests without a configured bearer token.
pub async fn require_token(State(tokens): State<ApiTokens>, request: Request, next: Next) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token);
    match presented {
        Some(token) if tokens.accepts(token) => next.run(request).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is
/// case-insensitive (RFC 9110 §11.1).
pub fn bearer_token(value: &str) -> Option<&str> {
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
    #[error("database unavailable")]
    Database(#[from] sqlx::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::BadParameter { .. } => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Database(e) => {
                tracing::error!(error = %e, "read API: database failed");
                (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
            }
        };
        let mut body = json!({ "error": code, "message": self.to_string() });
        if let ApiError::BadParameter { parameter, .. } = &self {
            body["parameter"] = json!(parameter);
        }
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn bad(parameter: &str, message: impl Into<String>) -> ApiError {
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
}

/// The columns of `AccessCodeView`, for the list's query builder; `get_access_code`
/// names them itself (checked at compile time against the struct).
const VIEW_COLUMNS: &str = "access_code_id, device_id, workspace_id, name, type, status, is_managed, starts_at, \
     ends_at, warnings, errors, code, deleted_at, last_event_id, last_event_type, last_event_occurred_at, \
     fetched_at, updated_at";

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
    /// Every change of status, warnings or errors, oldest first.
    pub history: Vec<HistoryEntry>,
    /// The 50 most recent events for the code, newest first.
    pub recent_events: Vec<EventSummary>,
}

/// Filters for `GET /v1/access_codes`; all optional, combined with AND.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only codes with this status (`setting`, `set`, `unset`, `removing`, `unknown`).
    pub status: Option<String>,
    pub device_id: Option<String>,
    /// `true`: only codes with errors; `false`: only codes without.
    pub has_errors: Option<String>,
    /// `true`: only codes with warnings; `false`: only codes without.
    pub has_warnings: Option<String>,
    /// `true`: only deleted codes; `false`: only codes that still exist.
    pub deleted: Option<String>,
    /// RFC 3339 time: only codes whose row changed at or after it.
    pub updated_since: Option<String>,
    /// Page size, 1 to `api.max_page_size` (default 100).
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn parse_bool(parameter: &str, value: Option<&String>) -> Result<Option<bool>, ApiError> {
    value
        .map(|v| match v.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(bad(parameter, "expected `true` or `false`")),
        })
        .transpose()
}

fn parse_text<'a>(parameter: &str, value: Option<&'a String>, max: usize) -> Result<Option<&'a str>, ApiError> {
    match value {
        Some(v) if v.is_empty() || v.len() > max => Err(bad(parameter, format!("expected 1 to {max} characters"))),
        other => Ok(other.map(String::as_str)),
    }
}

/// List mirrored access codes, filtered, in pages ordered by `access_code_id`.
#[utoipa::path(
    get,
    path = "/v1/access_codes",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of access codes", body = AccessCodePage),
        (status = 400, description = "A query parameter is invalid (named in `parameter`)"),
        (status = 401, description = "Missing or wrong bearer token"),
    ),
    security(("bearer" = []))
)]
pub async fn list_access_codes(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<AccessCodePage>, ApiError> {
    let Query(query) = query.map_err(|e| bad(&rejected_parameter(&e.body_text()), e.body_text()))?;
    let max = state.settings.api.max_page_size;
    let limit = match &query.limit {
        None => 100.min(max),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| bad("limit", format!("expected a number from 1 to {max}")))?,
    };
    let after = query
        .cursor
        .as_ref()
        .map(|c| {
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .filter(|id| !id.is_empty())
                .ok_or_else(|| bad("cursor", "not a cursor this API returned"))
        })
        .transpose()?;
    let updated_since = query
        .updated_since
        .as_ref()
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| bad("updated_since", "expected an RFC 3339 time like 2026-11-25T10:00:00Z"))
        })
        .transpose()?;
    let status = parse_text("status", query.status.as_ref(), 32)?;
    let device_id = parse_text("device_id", query.device_id.as_ref(), 255)?;
    let has_errors = parse_bool("has_errors", query.has_errors.as_ref())?;
    let has_warnings = parse_bool("has_warnings", query.has_warnings.as_ref())?;
    let deleted = parse_bool("deleted", query.deleted.as_ref())?;

    let mut sql: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("SELECT {VIEW_COLUMNS} FROM access_codes WHERE true"));
    if let Some(status) = status {
        sql.push(" AND status = ").push_bind(status);
    }
    if let Some(device_id) = device_id {
        sql.push(" AND device_id = ").push_bind(device_id);
    }
    if let Some(has) = has_errors {
        sql.push(" AND (jsonb_array_length(errors) > 0) = ").push_bind(has);
    }
    if let Some(has) = has_warnings {
        sql.push(" AND (jsonb_array_length(warnings) > 0) = ").push_bind(has);
    }
    if let Some(deleted) = deleted {
        sql.push(" AND (deleted_at IS NOT NULL) = ").push_bind(deleted);
    }
    if let Some(since) = updated_since {
        sql.push(" AND updated_at >= ").push_bind(since);
    }
    if let Some(after) = &after {
        sql.push(" AND access_code_id > ").push_bind(after);
    }
    sql.push(" ORDER BY access_code_id LIMIT ").push_bind(i64::from(limit) + 1);
    let mut rows: Vec<AccessCodeView> = sql.build_query_as().fetch_all(&state.pool).await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|last| URL_SAFE_NO_PAD.encode(&last.access_code_id))
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
#[utoipa::path(
    get,
    path = "/v1/access_codes/{access_code_id}",
    params(("access_code_id" = String, Path, description = "Seam's access code id")),
    responses(
        (status = 200, description = "The access code", body = AccessCodeDetail),
        (status = 401, description = "Missing or wrong bearer token"),
        (status = 404, description = "Not in the mirror"),
    ),
    security(("bearer" = []))
)]
pub async fn get_access_code(
    State(state): State<AppState>,
    Path(access_code_id): Path<String>,
) -> Result<Json<AccessCodeDetail>, ApiError> {
    let view = sqlx::query_as!(
        AccessCodeView,
        r#"SELECT access_code_id, device_id, workspace_id, name, type AS kind, status, is_managed, starts_at,
                ends_at, warnings AS "warnings: Jsonb<Value>", errors AS "errors: Jsonb<Value>", code, deleted_at,
                last_event_id, last_event_type, last_event_occurred_at, fetched_at, updated_at
         FROM access_codes WHERE access_code_id = $1"#,
        access_code_id,
    )
    .fetch_optional(&state.pool)
    .await?;
    let view = view.ok_or(ApiError::NotFound)?;
    let history = sqlx::query_as!(
        HistoryEntry,
        r#"SELECT change, previous_status, status, warnings AS "warnings: Jsonb<Value>",
                errors AS "errors: Jsonb<Value>", event_id, event_type, event_occurred_at, fetched_at, created_at
         FROM access_code_history WHERE access_code_id = $1 ORDER BY id"#,
        access_code_id,
    )
    .fetch_all(&state.pool)
    .await?;
    let recent_events = sqlx::query_as!(
        EventSummary,
        "SELECT event_id, event_type, occurred_at, received_at FROM seam_events
         WHERE access_code_id = $1 ORDER BY received_at DESC LIMIT 50",
        access_code_id,
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(AccessCodeDetail { access_code: hide_pin(view, state.settings.store_pins), history, recent_events }))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "seam-access-sync read API", description = "The mirror of Seam access codes kept by seam-access-sync."),
    paths(list_access_codes, get_access_code),
    components(schemas(AccessCodeView, AccessCodePage, AccessCodeDetail, HistoryEntry, EventSummary)),
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

/// `GET /v1/openapi.json`
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
