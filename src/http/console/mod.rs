//! The operator console at `/console`: server-rendered pages (maud, every string
//! escaped at compile time), one small script served from the binary, no inline
//! script or style. On whenever the read API is (`api.tokens`); signing in exchanges
//! one of its tokens for a session cookie (`session`).
//!
//! Pages: the codes table (`/console/codes`), a code (`/console/codes/{id}`), health
//! (`/console/health`). Actions (POST, each with the session's CSRF token): re-fetch a
//! code (the CLI's `refetch`), redrive a dead letter (the CLI's `dead-letters
//! redrive`), sign out. Live updates come from the change stream
//! (`/console/changes`, the same stream as `/v1/changes`).

mod pages;
mod session;

use std::collections::HashMap;

use axum::Router;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Form, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::AppState;
use super::read_api::{self, ApiError};
use crate::seam::event::CodeEndpoint;
use crate::store::admin;
use crate::store::console::{self as console_store, CodeFilter};
use session::{SESSION_COOKIE, SIGN_IN_COOKIE, request_cookie};
pub use session::{Session, Sessions};

/// Codes per page of the codes table.
pub const PAGE_SIZE: u32 = 50;

/// No inline script or style; nothing from elsewhere; never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/codes") }))
        .route("/console/sign-in", get(sign_in_form).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/codes", get(codes))
        .route("/console/codes/{access_code_id}", get(code))
        .route("/console/codes/{access_code_id}/row", get(code_row))
        .route("/console/codes/{access_code_id}/refetch", post(refetch))
        .route("/console/health", get(health))
        .route("/console/dead-letters/{access_code_id}/redrive", post(redrive))
        .route("/console/changes", get(changes))
        .route("/console/assets/{file}", get(asset))
        .layer(middleware::from_fn(security_headers))
}

/// On every console answer: the CSP, no framing, no sniffing, no caching of pages
/// (assets set their own `Cache-Control`), no referrer.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// What a console request that fails answers: an HTML page with the status.
#[derive(Debug)]
pub enum ConsoleError {
    /// GET without a session: to the sign-in page.
    SignIn,
    /// Another method without a session.
    Unauthorized,
    /// A POST without its session's CSRF token: nothing done.
    Forbidden,
    BadRequest(String),
    NotFound,
    Unavailable,
}

impl From<sqlx::Error> for ConsoleError {
    fn from(error: sqlx::Error) -> ConsoleError {
        tracing::error!(error = %error, "console: database failed");
        ConsoleError::Unavailable
    }
}

impl From<ApiError> for ConsoleError {
    fn from(error: ApiError) -> ConsoleError {
        match error {
            ApiError::BadParameter { parameter, message } => {
                ConsoleError::BadRequest(format!("{parameter}: {message}"))
            }
            ApiError::NotFound => ConsoleError::NotFound,
            ApiError::Refused { .. } => ConsoleError::BadRequest("a value the database cannot hold".into()),
            ApiError::Unauthorized => ConsoleError::Unauthorized,
            ApiError::Database(e) => ConsoleError::from(e),
            ApiError::TooManyStreams { .. } => ConsoleError::Unavailable,
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title, text) = match self {
            ConsoleError::SignIn => return Redirect::to("/console/sign-in").into_response(),
            ConsoleError::Unauthorized => {
                (StatusCode::UNAUTHORIZED, "Not signed in", "Sign in first (your session may have expired).".into())
            }
            ConsoleError::Forbidden => (
                StatusCode::FORBIDDEN,
                "Refused",
                "The form's security token is missing or wrong, so nothing was done. Go back, reload the page and \
                 try again."
                    .into(),
            ),
            ConsoleError::BadRequest(why) => (StatusCode::BAD_REQUEST, "Bad request", why),
            ConsoleError::NotFound => (StatusCode::NOT_FOUND, "Not found", "No such access code in the mirror.".into()),
            ConsoleError::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "Unavailable", "The database is not answering; try again.".into())
            }
        };
        (status, pages::message(title, &text)).into_response()
    }
}

/// A signed-in operator: extracting it refuses requests without a valid session.
pub struct Operator {
    pub session: Session,
    pub csrf: String,
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Operator, ConsoleError> {
        let sessions = state.console.as_ref().ok_or(ConsoleError::NotFound)?;
        let session = request_cookie(&parts.headers, SESSION_COOKIE)
            .and_then(|value| sessions.verify(value, state.clock.now_unix()))
            .ok_or(if parts.method == Method::GET { ConsoleError::SignIn } else { ConsoleError::Unauthorized })?;
        let csrf = sessions.csrf_token(&session);
        Ok(Operator { session, csrf })
    }
}

/// A POST form: its CSRF token (and nothing else the console needs).
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// Refuses (403) a POST whose form does not carry the session's CSRF token.
fn check_csrf(
    state: &AppState,
    operator: &Operator,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<(), ConsoleError> {
    let sessions = state.console.as_ref().ok_or(ConsoleError::NotFound)?;
    let presented = form.ok().and_then(|Form(f)| f.csrf);
    if sessions.csrf_ok(&operator.session, presented.as_deref()) {
        Ok(())
    } else {
        tracing::warn!("console: a POST without its session's CSRF token was refused");
        Err(ConsoleError::Forbidden)
    }
}

async fn sign_in_form(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ConsoleError> {
    let sessions = state.console.as_ref().ok_or(ConsoleError::NotFound)?;
    let nonce = session::sign_in_nonce();
    let cookie = sessions.sign_in_cookie(&nonce, sessions.secure_for(&headers));
    Ok(([(header::SET_COOKIE, cookie)], pages::sign_in(&nonce, None)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    token: Option<String>,
    csrf: Option<String>,
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Result<Response, ConsoleError> {
    let (sessions, tokens) = match (&state.console, &state.api_tokens) {
        (Some(sessions), Some(tokens)) => (sessions, tokens),
        _ => return Err(ConsoleError::NotFound),
    };
    let form = form.ok().map(|Form(f)| f);
    let field = form.as_ref().and_then(|f| f.csrf.as_deref());
    if !session::sign_in_nonce_ok(request_cookie(&headers, SIGN_IN_COOKIE), field) {
        tracing::warn!("console: a sign-in without the form's CSRF token was refused");
        return Err(ConsoleError::Forbidden);
    }
    let secure = sessions.secure_for(&headers);
    let presented = form.as_ref().and_then(|f| f.token.as_deref()).unwrap_or("");
    match sessions.sign_in(tokens, presented, state.clock.now_unix()) {
        Some((_, value)) => {
            tracing::info!(cookie_secure = secure, "console: signed in");
            // Appended: an array of header pairs would keep only the last `Set-Cookie`.
            let cookies = AppendHeaders([
                (header::SET_COOKIE, sessions.session_cookie(&value, secure)),
                (header::SET_COOKIE, format!("{SIGN_IN_COOKIE}=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict")),
            ]);
            Ok((cookies, Redirect::to("/console/codes")).into_response())
        }
        None => {
            tracing::warn!("console: a sign-in with a wrong token was refused");
            let nonce = session::sign_in_nonce();
            let cookie = sessions.sign_in_cookie(&nonce, secure);
            let page = pages::sign_in(&nonce, Some("That token is not one of the configured API tokens."));
            Ok((StatusCode::UNAUTHORIZED, [(header::SET_COOKIE, cookie)], page).into_response())
        }
    }
}

async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    operator: Operator,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, ConsoleError> {
    check_csrf(&state, &operator, form)?;
    let sessions = state.console.as_ref().ok_or(ConsoleError::NotFound)?;
    let cookie = sessions.ended_cookie(sessions.secure_for(&headers));
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/console/sign-in")).into_response())
}

/// The codes table's query: each filter empty for "any".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodesQuery {
    status: Option<String>,
    errors: Option<String>,
    warnings: Option<String>,
    deleted: Option<String>,
    device_id: Option<String>,
    workspace_id: Option<String>,
    q: Option<String>,
    page: Option<String>,
}

/// A form field: None when empty.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl CodesQuery {
    fn filter(&self) -> Result<CodeFilter, ApiError> {
        let search = given(&self.q).map(|q| read_api::id_input("q", q).map(str::to_owned)).transpose()?;
        Ok(CodeFilter {
            status: given(&self.status).map(read_api::status_input).transpose()?.map(str::to_owned),
            has_errors: given(&self.errors).map(|v| read_api::bool_input("errors", v)).transpose()?,
            has_warnings: given(&self.warnings).map(|v| read_api::bool_input("warnings", v)).transpose()?,
            deleted: given(&self.deleted).map(|v| read_api::bool_input("deleted", v)).transpose()?,
            device_id: given(&self.device_id)
                .map(|v| read_api::id_input("device_id", v))
                .transpose()?
                .map(str::to_owned),
            workspace_id: given(&self.workspace_id)
                .map(|v| read_api::id_input("workspace_id", v))
                .transpose()?
                .map(str::to_owned),
            search,
        })
    }

    /// Page number from 1 (the first when absent).
    fn page(&self) -> Result<u32, ApiError> {
        match given(&self.page) {
            None => Ok(1),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|p| (1..=1_000_000).contains(p) && !v.starts_with('0'))
                .ok_or_else(|| read_api::bad("page", "expected a page number from 1")),
        }
    }
}

async fn codes(
    State(state): State<AppState>,
    operator: Operator,
    query: Result<Query<CodesQuery>, QueryRejection>,
) -> Result<Response, ConsoleError> {
    let Query(query) = query.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    let filter = query.filter()?;
    let page = query.page()?;
    // Read first: the page's live updates start after it.
    let live = crate::store::changes::latest_id(&state.pool).await?;
    let (rows, total) = console_store::codes(&state.pool, &filter, page - 1, PAGE_SIZE).await?;
    Ok(pages::codes(&operator, &filter, (&rows, total, page), live, wall_clock()).into_response())
}

fn path_id(access_code_id: Result<Path<String>, PathRejection>) -> Result<String, ConsoleError> {
    let Path(id) = access_code_id.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    read_api::id_input("access_code_id", &id)?;
    Ok(id)
}

async fn code(
    State(state): State<AppState>,
    operator: Operator,
    access_code_id: Result<Path<String>, PathRejection>,
    Query(notice): Query<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let id = path_id(access_code_id)?;
    let live = crate::store::changes::latest_id(&state.pool).await?;
    let detail = read_api::access_code_detail(&state.pool, &id, state.settings.store_pins).await?;
    let extras = console_store::row_extras(&state.pool, &id).await?.ok_or(ConsoleError::NotFound)?;
    let notice = notice.get("done").map(String::as_str);
    let times = (live, wall_clock());
    Ok(pages::code(&operator, &detail, &extras, state.settings.store_pins, notice, times).into_response())
}

async fn code_row(
    State(state): State<AppState>,
    _operator: Operator,
    access_code_id: Result<Path<String>, PathRejection>,
) -> Result<Response, ConsoleError> {
    let id = path_id(access_code_id)?;
    let row = console_store::code_row(&state.pool, &id).await?.ok_or(ConsoleError::NotFound)?;
    Ok(pages::code_row_fragment(&row, wall_clock()).into_response())
}

/// Queues a re-fetch of the code now, as the CLI's `refetch` does.
async fn refetch(
    State(state): State<AppState>,
    operator: Operator,
    access_code_id: Result<Path<String>, PathRejection>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, ConsoleError> {
    let id = path_id(access_code_id)?;
    check_csrf(&state, &operator, form)?;
    let row = console_store::code_row(&state.pool, &id).await?.ok_or(ConsoleError::NotFound)?;
    admin::refetch(&state.pool, std::slice::from_ref(&id), CodeEndpoint::of(row.is_managed)).await?;
    tracing::info!(access_code_id = %id, "console: re-fetch queued");
    Ok(Redirect::to(&format!("{}?done=refetch", pages::code_url(&id))).into_response())
}

async fn health(
    State(state): State<AppState>,
    operator: Operator,
    Query(notice): Query<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let pool = &state.pool;
    let queue = admin::queue_status(pool).await?;
    let dead_letters = admin::dead_letters(pool).await?;
    let jobs = admin::workspaces_jobs(pool).await?;
    let backups = crate::store::backup::status(pool, state.settings.backup.pull_after_seconds).await?;
    let unroutable = crate::store::queue::unroutable(pool, &state.workspaces.claim_filter()).await?;
    let sweep_due = crate::store::sweep::due(pool, &state.settings.sweep).await?.len();
    let health = pages::Health {
        queue,
        dead_letters,
        jobs,
        backups,
        unroutable,
        sweep_due,
        keys: state.workspaces.key_states(),
        settings: &state.settings,
        notice: notice.get("done").cloned(),
    };
    Ok(pages::health(&operator, &health, wall_clock()).into_response())
}

/// Puts one dead letter back in the queue, as the CLI's `dead-letters redrive` does.
async fn redrive(
    State(state): State<AppState>,
    operator: Operator,
    access_code_id: Result<Path<String>, PathRejection>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, ConsoleError> {
    let id = path_id(access_code_id)?;
    check_csrf(&state, &operator, form)?;
    let redriven = admin::redrive(&state.pool, Some(std::slice::from_ref(&id))).await?;
    if redriven.is_empty() {
        return Err(ConsoleError::NotFound);
    }
    tracing::info!(access_code_id = %id, "console: dead letter redriven");
    Ok(Redirect::to("/console/health?done=redrive").into_response())
}

/// The console's live updates: the change stream, with the session cookie, after
/// `last_event_id` (the newest change when the page was read, so none made while it
/// loaded is missed); an `EventSource` resumes with `Last-Event-ID` when it reconnects.
async fn changes(
    State(state): State<AppState>,
    headers: HeaderMap,
    operator: Result<Operator, ConsoleError>,
    query: Result<Query<read_api::ChangesQuery>, QueryRejection>,
) -> Response {
    if operator.is_err() {
        return ConsoleError::Unauthorized.into_response();
    }
    let Ok(Query(query)) = query else {
        return ConsoleError::BadRequest("unknown query parameter".into()).into_response();
    };
    let start = match super::changes::requested_start(&headers, query.last_event_id.as_deref()) {
        Ok(start) => start,
        Err(parameter) => return ConsoleError::BadRequest(format!("{parameter} is not a history id")).into_response(),
    };
    match read_api::open_change_stream(&state, start).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// Now, for "how long ago": the times shown come from the database's clock, not the
/// app's (which tests set; sessions use it).
fn wall_clock() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The script and the style sheet, from the binary; their names carry a hash of
/// their content, so they can be cached for good.
async fn asset(Path(file): Path<String>) -> Response {
    match pages::asset(&file) {
        Some((content_type, body)) => (
            [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")],
            body,
        )
            .into_response(),
        None => ConsoleError::NotFound.into_response(),
    }
}
