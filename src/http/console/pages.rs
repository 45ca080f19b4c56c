//! The console's pages (maud: markup checked at compile time, every interpolated
//! string escaped). No inline script or style: one script and one style sheet,
//! served from the binary under content-hashed names.

use std::sync::LazyLock;

use chrono::{DateTime, TimeZone, Utc};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Operator;
use crate::config::Settings;
use crate::http::read_api::{AccessCodeDetail, STATUSES};
use crate::seam::client::shortened_keeping_request_id;
use crate::seam::problems;
use crate::store::admin::{DeadLetter, QueueStatus, WorkspaceJobs};
use crate::store::backup::PullStatus;
use crate::store::console::{CodeFilter, CodeRow, RowExtras};

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// `console-<hash>.js`, `console-<hash>.css`.
static SCRIPT_NAME: LazyLock<String> = LazyLock::new(|| hashed_name(SCRIPT, "js"));
static STYLE_NAME: LazyLock<String> = LazyLock::new(|| hashed_name(STYLE, "css"));

fn hashed_name(content: &str, extension: &str) -> String {
    let hash = Sha256::digest(content.as_bytes());
    let hex: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("console-{hex}.{extension}")
}

/// An asset by its hashed name: content type and body.
pub fn asset(file: &str) -> Option<(&'static str, &'static str)> {
    if file == SCRIPT_NAME.as_str() {
        Some(("text/javascript; charset=utf-8", SCRIPT))
    } else if file == STYLE_NAME.as_str() {
        Some(("text/css; charset=utf-8", STYLE))
    } else {
        None
    }
}

/// A string as one URL path segment or query value (RFC 3986 unreserved kept).
pub fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn code_url(access_code_id: &str) -> String {
    format!("/console/codes/{}", encoded(access_code_id))
}

/// A page; `live`: the newest history id when the page was read, for a page that
/// updates itself (its script streams the changes after it, so none made while the
/// page loads is missed).
fn layout(title: &str, operator: Option<&Operator>, current: &str, live: Option<i64>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · seam-access-sync" }
                link rel="stylesheet" href={ "/console/assets/" (STYLE_NAME.as_str()) };
                @if live.is_some() {
                    script src={ "/console/assets/" (SCRIPT_NAME.as_str()) } defer {}
                }
            }
            body data-changes-after=[live] {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "seam-access-sync" }
                    @if let Some(operator) = operator {
                        nav aria-label="Console" {
                            a href="/console/codes" aria-current=[(current == "codes").then_some("page")] { "Codes" }
                            a href="/console/health" aria-current=[(current == "health").then_some("page")] { "Health" }
                        }
                        form.sign-out method="post" action="/console/sign-out" {
                            input type="hidden" name="csrf" value=(operator.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" tabindex="-1" { (body) }
            }
        }
    }
}

/// A page that only says something (errors).
pub fn message(title: &str, text: &str) -> Markup {
    layout(
        title,
        None,
        "",
        None,
        html! {
            h1 { (title) }
            p { (text) }
            p { a href="/console/codes" { "Back to the console" } }
        },
    )
}

pub fn sign_in(nonce: &str, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        "",
        None,
        html! {
            h1 { "Sign in to the console" }
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            form.sign-in method="post" action="/console/sign-in" {
                input type="hidden" name="csrf" value=(nonce);
                label for="token" { "API token" }
                input id="token" name="token" type="password" autocomplete="current-password" required
                    aria-describedby="token-help";
                p id="token-help" .help { "One of the tokens in api.tokens (API_TOKEN). The session lasts until it expires or you sign out." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

fn ago(seconds: i64) -> String {
    match seconds {
        s if s < 0 => "just now".into(),
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86_400),
    }
}

fn when(time: DateTime<Utc>, now: i64) -> Markup {
    html! {
        time datetime=(time.to_rfc3339()) { (time.format("%Y-%m-%d %H:%M:%S UTC")) }
        " "
        span.ago { "(" (ago(now - time.timestamp())) ")" }
    }
}

fn maybe_when(time: Option<DateTime<Utc>>, now: i64) -> Markup {
    match time {
        Some(time) => when(time, now),
        None => html! { span.none { "never" } },
    }
}

fn seconds_ago(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "none".into(), |s| ago(s as i64).replace(" ago", ""))
}

/// A status as a badge: the word itself (and a symbol), coloured as a second cue.
fn status_badge(status: Option<&str>, deleted: bool) -> Markup {
    let (class, symbol, text) = match (deleted, status) {
        (true, _) => ("deleted", "×", "deleted".to_owned()),
        (false, Some("set")) => ("ok", "✓", "set".into()),
        (false, Some(s @ ("setting" | "removing"))) => ("pending", "…", s.into()),
        (false, Some("unset")) => ("neutral", "○", "unset".into()),
        (false, Some(other)) => ("warn", "?", other.into()),
        (false, None) => ("neutral", "–", "no status".into()),
    };
    html! { span class={ "badge status-" (class) } { span aria-hidden="true" { (symbol) " " } (text) } }
}

fn count_cell(codes: &[String], singular: &str, class: &str) -> Markup {
    html! {
        @if codes.is_empty() {
            span.none { "0" }
        } @else {
            span class={ "badge " (class) } {
                (codes.len()) " " (singular) @if codes.len() > 1 { "s" }
            }
            " "
            span.codes { (codes.join(", ")) }
        }
    }
}

fn code_row(row: &CodeRow, now: i64) -> Markup {
    let problem = if !row.error_codes.is_empty() {
        "row-error"
    } else if !row.warning_codes.is_empty() {
        "row-warning"
    } else {
        "row-ok"
    };
    html! {
        tr class=(problem) data-live-id="row" data-access-code-id=(row.access_code_id)
            data-live-url={ (code_url(&row.access_code_id)) "/row" } {
            th scope="row" {
                a href=(code_url(&row.access_code_id)) {
                    @match &row.name { Some(name) if !name.is_empty() => (name), _ => (row.access_code_id) }
                }
                br;
                span.id { (row.access_code_id) }
            }
            td { (row.device_id.as_deref().unwrap_or("–")) }
            td { (status_badge(row.status.as_deref(), row.deleted_at.is_some())) }
            td { (count_cell(&row.error_codes, "error", "error")) }
            td { (count_cell(&row.warning_codes, "warning", "warning")) }
            td { (when(row.last_change_at, now)) }
            td { (row.workspace_id.as_deref().unwrap_or("–")) }
        }
    }
}

/// One row, alone, for the live update of the codes table.
pub fn code_row_fragment(row: &CodeRow, now: i64) -> Markup {
    html! { table { tbody { (code_row(row, now)) } } }
}

fn select(name: &str, label: &str, current: Option<&str>, options: &[(&str, &str)]) -> Markup {
    html! {
        div.field {
            label for=(name) { (label) }
            select id=(name) name=(name) {
                @for (value, text) in options {
                    option value=(value) selected[current.unwrap_or("") == *value] { (text) }
                }
            }
        }
    }
}

fn bool_value(value: Option<bool>) -> Option<&'static str> {
    value.map(|v| if v { "true" } else { "false" })
}

/// The query string of the codes table for `filter` and `page`.
fn codes_query(filter: &CodeFilter, page: u32) -> String {
    let pairs = [
        ("status", filter.status.clone()),
        ("errors", bool_value(filter.has_errors).map(str::to_owned)),
        ("warnings", bool_value(filter.has_warnings).map(str::to_owned)),
        ("deleted", bool_value(filter.deleted).map(str::to_owned)),
        ("device_id", filter.device_id.clone()),
        ("workspace_id", filter.workspace_id.clone()),
        ("q", filter.search.clone()),
        ("page", (page > 1).then(|| page.to_string())),
    ];
    let query: Vec<String> =
        pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encoded(v)))).collect();
    if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) }
}

pub fn codes(
    operator: &Operator,
    filter: &CodeFilter,
    (rows, total, page): (&[CodeRow], i64, u32),
    live: i64,
    now: i64,
) -> Markup {
    let pages = (total.max(1) as u64).div_ceil(u64::from(super::PAGE_SIZE)) as u32;
    let mut statuses: Vec<(&str, &str)> = vec![("", "any")];
    statuses.extend(STATUSES.iter().map(|s| (*s, *s)));
    let yes_no = |any: &'static str| [("", any), ("true", "yes"), ("false", "no")];
    let body = html! {
        h1 { "Access codes" }
        form.filters method="get" action="/console/codes" role="search" aria-label="Filter access codes" {
            div.field {
                label for="q" { "Search name or id" }
                input id="q" name="q" type="search" value=[filter.search.as_deref()];
            }
            (select("status", "Status", filter.status.as_deref(), &statuses))
            (select("errors", "With errors", bool_value(filter.has_errors), &yes_no("any")))
            (select("warnings", "With warnings", bool_value(filter.has_warnings), &yes_no("any")))
            (select("deleted", "Deleted", bool_value(filter.deleted), &yes_no("any")))
            div.field {
                label for="device_id" { "Device id" }
                input id="device_id" name="device_id" type="text" value=[filter.device_id.as_deref()];
            }
            div.field {
                label for="workspace_id" { "Workspace id" }
                input id="workspace_id" name="workspace_id" type="text" value=[filter.workspace_id.as_deref()];
            }
            div.actions {
                button type="submit" { "Filter" }
                a href="/console/codes" { "Clear filters" }
            }
        }
        p id="live-status" role="status" aria-live="polite" data-live-elsewhere { "Live updates: connecting…" }
        table.codes {
            caption { (total) " code(s), problems first: errors, warnings, codes still on their way, then the rest; deleted last. Page " (page) " of " (pages) "." }
            thead {
                tr {
                    th scope="col" { "Name" }
                    th scope="col" { "Device" }
                    th scope="col" { "Status" }
                    th scope="col" { "Errors" }
                    th scope="col" { "Warnings" }
                    th scope="col" { "Last change" }
                    th scope="col" { "Workspace" }
                }
            }
            tbody {
                @for row in rows { (code_row(row, now)) }
                @if rows.is_empty() {
                    tr { td colspan="7" { "No access code matches." } }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if page > 1 {
                a rel="prev" href={ "/console/codes" (codes_query(filter, page - 1)) } { "← Previous page" }
            }
            span { "Page " (page) " of " (pages) }
            @if page < pages {
                a rel="next" href={ "/console/codes" (codes_query(filter, page + 1)) } { "Next page →" }
            }
        }
    };
    layout("Access codes", Some(operator), "codes", Some(live), body)
}

fn problem(kind: &str, item: &Value, explanation: Option<problems::Explanation>) -> Markup {
    let code_field = if kind == "error" { "error_code" } else { "warning_code" };
    let code = item.get(code_field).and_then(Value::as_str).unwrap_or("(no code)");
    let message = item.get("message").and_then(Value::as_str);
    html! {
        li class={ "problem " (kind) } {
            h3 { span class={ "badge " (kind) } { (kind) } " " code { (code) } }
            @if let Some(message) = message { p { "Seam says: " q { (message) } } }
            @match explanation {
                Some(explanation) => {
                    p { strong { "What it means: " } (explanation.meaning) }
                    p { strong { "What to do: " } (explanation.remedy) }
                }
                None => p.unknown { "No explanation is known for this code: it is shown as Seam sent it." },
            }
            @if let Some(created_at) = item.get("created_at").and_then(Value::as_str) {
                p.help { "Since " (created_at) }
            }
        }
    }
}

fn field(name: &str, value: Markup) -> Markup {
    html! { dt { (name) } dd { (value) } }
}

fn text(value: Option<&str>) -> Markup {
    match value {
        Some(value) => html! { (value) },
        None => html! { span.none { "–" } },
    }
}

fn flag(value: Option<bool>) -> Markup {
    text(value.map(|v| if v { "yes" } else { "no" }))
}

fn time(value: Option<DateTime<Utc>>, now: i64) -> Markup {
    match value {
        Some(t) => when(t, now),
        None => text(None),
    }
}

pub fn code(
    operator: &Operator,
    detail: &AccessCodeDetail,
    extras: &RowExtras,
    store_pins: bool,
    notice: Option<&str>,
    (live, now): (i64, i64),
) -> Markup {
    let view = &detail.access_code;
    let title = view.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| view.access_code_id.clone());
    let errors: &[Value] = view.errors.0.as_array().map_or(&[], Vec::as_slice);
    let warnings: &[Value] = view.warnings.0.as_array().map_or(&[], Vec::as_slice);
    let body = html! {
        p { a href="/console/codes" { "← All codes" } }
        h1 { (title) }
        @if notice == Some("refetch") {
            p.notice role="status" { "Re-fetch queued: this page updates when Seam's answer changes the code." }
        }
        form.refetch method="post" action={ (code_url(&view.access_code_id)) "/refetch" } {
            input type="hidden" name="csrf" value=(operator.csrf);
            button type="submit" { "Re-fetch now" }
            span.help { " Asks Seam for this code again now, as " code { "seam-access-sync refetch" } " does." }
        }
        p id="live-status" role="status" aria-live="polite" { "Live updates: connecting…" }
        div data-live-id="details" data-access-code-id=(view.access_code_id)
            data-live-url=(code_url(&view.access_code_id)) {
            p.summary {
                (status_badge(view.status.as_deref(), view.deleted_at.is_some()))
                " " (errors.len()) " error(s), " (warnings.len()) " warning(s)"
            }
            section aria-labelledby="problems" {
                h2 id="problems" { "Errors and warnings" }
                @if errors.is_empty() && warnings.is_empty() {
                    p { "None: Seam reports no problem with this code." }
                } @else {
                    ul.problems {
                        @for e in errors {
                            (problem("error", e, e.get("error_code").and_then(Value::as_str).and_then(problems::error)))
                        }
                        @for w in warnings {
                            (problem("warning", w, w.get("warning_code").and_then(Value::as_str).and_then(problems::warning)))
                        }
                    }
                }
            }
            section aria-labelledby="timeline" {
                h2 id="timeline" { "Timeline" }
                table.timeline {
                    caption { "Every change the mirror recorded, newest first." }
                    thead { tr {
                        th scope="col" { "When" } th scope="col" { "Change" } th scope="col" { "Status" }
                        th scope="col" { "Errors" } th scope="col" { "Warnings" } th scope="col" { "Because of" }
                    } }
                    tbody {
                        @for h in detail.history.iter().rev() {
                            tr {
                                td { (when(h.created_at, now)) }
                                td { (h.change) @if !h.changes.is_empty() { ": " (h.changes.join(", ")) } " (" (h.origin) ")" }
                                td {
                                    @if let Some(previous) = &h.previous_status { (previous) " → " }
                                    (h.status.as_deref().unwrap_or("–"))
                                }
                                td { (codes_of(&h.errors.0, "error_code")) }
                                td { (codes_of(&h.warnings.0, "warning_code")) }
                                td { (h.event_type.as_deref().unwrap_or("a re-fetch without event")) }
                            }
                        }
                        @if detail.history.is_empty() { tr { td colspan="6" { "No change recorded yet." } } }
                    }
                }
            }
            section aria-labelledby="backup" {
                h2 id="backup" { "Backup access code" }
                @if let Some(b) = &detail.backup_access_code {
                    p { "Backup pulled for this code: " a href=(code_url(&b.access_code_id)) { (b.access_code_id) }
                        " (" @if b.mirrored { (b.status.as_deref().unwrap_or("no status")) } @else { "not mirrored yet" } ")" }
                    @if let Some(pin) = &b.code { p { "Backup PIN: " code { (pin) } } }
                }
                @if let Some(original) = &view.backup_of_access_code_id {
                    p { "This is a backup code, pulled for " a href=(code_url(original)) { (original) } "." }
                }
                @if let Some(pull) = &detail.backup_pull {
                    p { "This service's pull: " (pull.state) " (" (pull.reason) ", " (pull.attempts) " attempt(s))"
                        @if let Some(error) = &pull.last_error { ": " (error) } }
                }
                @if detail.backup_access_code.is_none() && view.backup_of_access_code_id.is_none() && detail.backup_pull.is_none() {
                    p { "None." }
                }
            }
            section aria-labelledby="fields" {
                h2 id="fields" { "The mirror row" }
                dl.fields {
                    (field("access_code_id", html! { code { (view.access_code_id) } }))
                    (field("name", text(view.name.as_deref())))
                    (field("status", text(view.status.as_deref())))
                    (field("type", text(view.kind.as_deref())))
                    (field("managed", flag(Some(view.is_managed))))
                    (field("device_id", text(view.device_id.as_deref())))
                    (field("workspace_id", text(view.workspace_id.as_deref())))
                    (field("connected_account_id", text(view.connected_account_id.as_deref())))
                    (field("starts_at", time(view.starts_at, now)))
                    (field("ends_at", time(view.ends_at, now)))
                    @if store_pins { (field("code (PIN)", text(view.code.as_deref()))) }
                    (field("created_at (Seam)", time(view.created_at, now)))
                    (field("deleted_at", time(view.deleted_at, now)))
                    (field("status_changed_at", time(extras.status_changed_at, now)))
                    (field("fetched_at", when(view.fetched_at, now)))
                    (field("updated_at", when(view.updated_at, now)))
                    (field("row created_at", when(extras.created_at, now)))
                    (field("last_event_type", text(view.last_event_type.as_deref())))
                    (field("last_event_id", text(view.last_event_id.as_deref())))
                    (field("last_event_occurred_at", time(view.last_event_occurred_at, now)))
                    (field("is_backup", flag(view.is_backup)))
                    (field("is_backup_access_code_available", flag(view.is_backup_access_code_available)))
                    (field("pulled_backup_access_code_id", text(view.pulled_backup_access_code_id.as_deref())))
                    (field("backup_of_access_code_id", text(view.backup_of_access_code_id.as_deref())))
                    (field("is_offline_access_code", flag(view.is_offline_access_code)))
                    (field("is_one_time_use", flag(view.is_one_time_use)))
                    (field("is_waiting_for_code_assignment", flag(view.is_waiting_for_code_assignment)))
                    (field("is_scheduled_on_device", flag(view.is_scheduled_on_device)))
                    (field("pending_mutations", html! { pre { (pretty(&view.pending_mutations.0)) } }))
                    (field("warnings", html! { pre { (pretty(&view.warnings.0)) } }))
                    (field("errors", html! { pre { (pretty(&view.errors.0)) } }))
                }
                @if let Some(object) = &extras.access_code {
                    details {
                        summary { "Seam's whole answer (" @if store_pins { "as stored" } @else { "PINs redacted" } ")" }
                        pre { (pretty(&object.0)) }
                    }
                }
            }
            section aria-labelledby="events" {
                h2 id="events" { "Recent events" }
                table.events {
                    caption { "The last 50 events for this code, newest first." }
                    thead { tr { th scope="col" { "Received" } th scope="col" { "Event" } th scope="col" { "Occurred" } th scope="col" { "Event id" } } }
                    tbody {
                        @for e in &detail.recent_events {
                            tr {
                                td { (when(e.received_at, now)) }
                                td { (e.event_type) }
                                td { (time(e.occurred_at, now)) }
                                td { code { (e.event_id) } }
                            }
                        }
                        @if detail.recent_events.is_empty() { tr { td colspan="4" { "None stored." } } }
                    }
                }
            }
        }
    };
    layout(&title, Some(operator), "codes", Some(live), body)
}

fn codes_of(list: &Value, field: &str) -> String {
    let codes: Vec<&str> = list.as_array().into_iter().flatten().filter_map(|v| v.get(field)?.as_str()).collect();
    if codes.is_empty() { "–".into() } else { codes.join(", ") }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// What the health page shows: what `status` and `/readyz` compute.
pub struct Health<'a> {
    pub queue: QueueStatus,
    pub dead_letters: Vec<DeadLetter>,
    pub jobs: Vec<WorkspaceJobs>,
    pub backups: PullStatus,
    pub unroutable: Vec<(Option<String>, i64)>,
    /// Codes the next sweep would re-fetch (at most 1,000).
    pub sweep_due: usize,
    /// Each workspace's credential: label, id, Seam's rejection.
    pub keys: Vec<(String, Option<String>, Option<String>)>,
    pub settings: &'a Settings,
    pub notice: Option<String>,
}

fn every(seconds: u64) -> String {
    if seconds == 0 { "off".into() } else { format!("every {seconds} s") }
}

pub fn health(operator: &Operator, h: &Health<'_>, now: i64) -> Markup {
    let q = &h.queue;
    let unroutable: i64 = h.unroutable.iter().map(|(_, n)| n).sum();
    let body = html! {
        h1 { "Health" }
        @if h.notice.as_deref() == Some("redrive") {
            p.notice role="status" { "Dead letter redriven: it is back in the queue, due now." }
        }
        section aria-labelledby="queue" {
            h2 id="queue" { "Re-fetch queue" }
            dl.fields {
                (field("pending re-fetches", html! { (q.pending) " (" (q.in_flight) " in flight, " (q.due) " due now)" }))
                (field("oldest pending", html! { (seconds_ago(q.oldest_pending_age_seconds)) }))
                (field("dead letters", html! {
                    @if q.dead_letters > 0 { span.badge.error { (q.dead_letters) " dead letter(s)" } } @else { "0" }
                }))
                (field("unroutable", html! { (unroutable) @if unroutable > 0 { " (no configured credential reaches them: add the workspace)" } }))
                (field("last webhook", html! {
                    @match q.last_webhook_at { Some(at) => (when(at, now)), None => "never" }
                }))
                (field("mirrored codes", html! { (q.mirrored_codes) }))
            }
        }
        section aria-labelledby="dead" {
            h2 id="dead" { "Dead letters" }
            @if h.dead_letters.is_empty() {
                p { "None." }
            } @else {
                table.dead {
                    caption { "Re-fetches given up on, with their last error. Redrive puts one back in the queue, due now." }
                    thead { tr {
                        th scope="col" { "Access code" } th scope="col" { "Attempts" } th scope="col" { "Dead since" }
                        th scope="col" { "Last error" } th scope="col" { "Action" }
                    } }
                    tbody {
                        @for d in &h.dead_letters {
                            tr {
                                th scope="row" { a href=(code_url(&d.access_code_id)) { (d.access_code_id) } }
                                td { (d.attempts) }
                                td { (when(d.dead_lettered_at, now)) }
                                td { (shortened_keeping_request_id(d.last_error.as_deref().unwrap_or(""), 300)) }
                                td {
                                    form method="post" action={ "/console/dead-letters/" (encoded(&d.access_code_id)) "/redrive" } {
                                        input type="hidden" name="csrf" value=(operator.csrf);
                                        button type="submit" aria-label={ "Redrive " (d.access_code_id) } { "Redrive" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="seam" {
            h2 id="seam" { "Seam credentials" }
            ul {
                @for (label, id, rejection) in &h.keys {
                    li {
                        (label) @if let Some(id) = id { " (" (id) ")" } ": "
                        @match rejection {
                            None => span.badge.status-ok { span aria-hidden="true" { "✓ " } "accepted" },
                            Some(why) => { span.badge.error { "rejected" } " " (why) },
                        }
                    }
                }
                @if h.keys.is_empty() { li { "None configured in this process." } }
            }
        }
        section aria-labelledby="jobs" {
            h2 id="jobs" { "Catch-up and import" }
            @for w in &h.jobs {
                h3 {
                    @match (w.label.as_deref(), w.key.as_str()) {
                        (Some(label), "") => { (label) " (workspace not known yet)" }
                        (None, "") => "Workspace not known yet",
                        (Some(label), key) => { (label) " (" (key) ")" }
                        (None, key) => (key),
                    }
                }
                dl.fields {
                    @match &w.catch_up {
                        Some(c) => {
                            (field("catch-up", html! {
                                @match (c.last_run_at, c.last_outcome) {
                                    (Some(at), Some(outcome)) => {
                                        "last run " (when(at, now)) ": " (outcome) ", "
                                        (c.last_events_found) " event(s) found, " (c.last_events_new) " new"
                                    }
                                    _ => "never ran",
                                }
                            }))
                            (field("log read up to", maybe_when(c.high_water_mark, now)))
                            (field("caught up", maybe_when(c.last_success_at, now)))
                            @if let Some(error) = &c.last_error { (field("catch-up error", html! { span.error { (error) } })) }
                        }
                        None => (field("catch-up", html! { "never ran" })),
                    }
                    @match &w.import {
                        Some(r) => {
                            (field("import", html! {
                                "run " (r.id) ": " @if r.finished_at.is_some() { "finished" } @else { "unfinished" } ", "
                                (r.devices_done) "/" (r.devices_total) " device(s), " (r.codes_imported()) " code(s) imported"
                            }))
                            @if let Some(error) = &r.last_error { (field("import error", html! { span.error { (error) } })) }
                        }
                        None => (field("import", html! { "never ran" })),
                    }
                }
            }
            p.help { "Catch-up reads Seam's event log " (every(h.settings.catch_up.interval_seconds)) "." }
        }
        section aria-labelledby="sweeps" {
            h2 id="sweeps" { "Sweeps" }
            dl.fields {
                (field("sweeps", html! { (every(h.settings.sweep.interval_seconds)) }))
                (field("due now", html! { (h.sweep_due) " code(s) the next sweep re-fetches (stuck, or past a time-bound start or end)" }))
                (field("settled codes", html! { "re-fetched once their last fetch is " (h.settings.sweep.settled_interval_seconds) " s old" }))
            }
        }
        section aria-labelledby="backups" {
            h2 id="backups" { "Backup pulls" }
            p { (h.backups.pulled) " pulled, " (h.backups.failed.len()) " failed, " (h.backups.decided + h.backups.sending) " in progress"
                @if !h.settings.backup.pull_on_failure { " (backup.pull_on_failure is off: by hand only)" } }
            @if !h.backups.failed.is_empty() {
                ul { @for f in &h.backups.failed {
                    li { a href=(code_url(&f.access_code_id)) { (f.access_code_id) } ": " (shortened_keeping_request_id(f.last_error.as_deref().unwrap_or(""), 200)) }
                } }
            }
        }
        p.help { "Generated " (Utc.timestamp_opt(now, 0).single().map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default()) "." }
    };
    layout("Health", Some(operator), "health", None, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_encoded_as_one_path_segment() {
        assert_eq!(code_url("ac_1"), "/console/codes/ac_1");
        assert_eq!(code_url("a/b?c#d é"), "/console/codes/a%2Fb%3Fc%23d%20%C3%A9");
    }

    #[test]
    fn assets_are_served_under_their_content_hash_only() {
        assert!(asset(&SCRIPT_NAME).is_some() && asset(&STYLE_NAME).is_some());
        assert!(SCRIPT_NAME.starts_with("console-") && SCRIPT_NAME.ends_with(".js"));
        assert_eq!(asset("console.js"), None);
    }

    #[test]
    fn a_status_is_said_in_words_not_colour_alone() {
        let badge = status_badge(Some("setting"), false).into_string();
        assert!(badge.contains("setting") && badge.contains("status-pending"), "{badge}");
        assert!(status_badge(Some("set"), true).into_string().contains("deleted"));
    }
}
