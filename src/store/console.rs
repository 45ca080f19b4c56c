//! The console's questions to the mirror: the codes table (filtered, searched, paged,
//! problems first) and the parts of a code's row the read API does not show.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder};

/// What the codes table asks for; every field optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CodeFilter {
    pub status: Option<String>,
    pub has_errors: Option<bool>,
    pub has_warnings: Option<bool>,
    pub deleted: Option<bool>,
    pub device_id: Option<String>,
    pub workspace_id: Option<String>,
    /// Part of the name (any case), or the whole id.
    pub search: Option<String>,
}

/// One line of the codes table.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CodeRow {
    pub access_code_id: String,
    pub name: Option<String>,
    pub device_id: Option<String>,
    pub workspace_id: Option<String>,
    pub status: Option<String>,
    pub is_managed: bool,
    pub warning_codes: Vec<String>,
    pub error_codes: Vec<String>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// The newest history row's time (the row's `updated_at` for a code without history).
    pub last_change_at: DateTime<Utc>,
}

const ROW_COLUMNS: &str = "a.access_code_id, a.name, a.device_id, a.workspace_id, a.status, a.is_managed,
    ARRAY(SELECT coalesce(w->>'warning_code', '') FROM jsonb_array_elements(a.warnings) w) AS warning_codes,
    ARRAY(SELECT coalesce(e->>'error_code', '') FROM jsonb_array_elements(a.errors) e) AS error_codes,
    a.deleted_at,
    coalesce((SELECT h.created_at FROM access_code_history h WHERE h.access_code_id = a.access_code_id
              ORDER BY h.id DESC LIMIT 1), a.updated_at) AS last_change_at";

/// Problems first: errors, then warnings, then codes stuck on their way, then the
/// rest, deleted codes last; within each, the most recent change first.
const PROBLEMS_FIRST: &str = "CASE WHEN a.deleted_at IS NOT NULL THEN 4
          WHEN jsonb_array_length(a.errors) > 0 THEN 0
          WHEN jsonb_array_length(a.warnings) > 0 THEN 1
          WHEN a.status IS NULL OR a.status IN ('setting', 'removing', 'unknown') THEN 2
          ELSE 3 END, last_change_at DESC, a.access_code_id";

/// `WHERE` and the conditions of `filter`, on the mirror aliased `a`: the one filter
/// of the codes table and of `GET /v1/access_codes`.
pub fn push_filter(sql: &mut QueryBuilder<Postgres>, filter: &CodeFilter) {
    sql.push(" WHERE true");
    if let Some(status) = &filter.status {
        sql.push(" AND a.status = ").push_bind(status.clone());
    }
    if let Some(has) = filter.has_errors {
        sql.push(" AND (jsonb_array_length(a.errors) > 0) = ").push_bind(has);
    }
    if let Some(has) = filter.has_warnings {
        sql.push(" AND (jsonb_array_length(a.warnings) > 0) = ").push_bind(has);
    }
    if let Some(deleted) = filter.deleted {
        sql.push(" AND (a.deleted_at IS NOT NULL) = ").push_bind(deleted);
    }
    if let Some(device_id) = &filter.device_id {
        sql.push(" AND a.device_id = ").push_bind(device_id.clone());
    }
    if let Some(workspace_id) = &filter.workspace_id {
        sql.push(" AND a.workspace_id = ").push_bind(workspace_id.clone());
    }
    if let Some(search) = &filter.search {
        let pattern = format!("%{}%", like_escaped(search));
        sql.push(" AND (a.name ILIKE ").push_bind(pattern).push(" OR a.access_code_id = ").push_bind(search.clone());
        sql.push(")");
    }
}

/// `text` matched literally by LIKE (whose escape character is `\` by default).
fn like_escaped(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// A page of the codes table (`page` from 0) and how many codes match in all.
pub async fn codes(pool: &PgPool, filter: &CodeFilter, page: u32, per_page: u32) -> sqlx::Result<(Vec<CodeRow>, i64)> {
    let mut count: QueryBuilder<Postgres> = QueryBuilder::new("SELECT count(*) FROM access_codes a");
    push_filter(&mut count, filter);
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(format!("SELECT {ROW_COLUMNS} FROM access_codes a"));
    push_filter(&mut sql, filter);
    sql.push(format!(" ORDER BY {PROBLEMS_FIRST} LIMIT "))
        .push_bind(i64::from(per_page))
        .push(" OFFSET ")
        .push_bind(i64::from(page) * i64::from(per_page));
    let rows = sql.build_query_as().fetch_all(pool).await?;
    Ok((rows, total))
}

/// One code's line of the table (for live updates).
pub async fn code_row(pool: &PgPool, access_code_id: &str) -> sqlx::Result<Option<CodeRow>> {
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(format!("SELECT {ROW_COLUMNS} FROM access_codes a"));
    sql.push(" WHERE a.access_code_id = ").push_bind(access_code_id.to_owned());
    sql.build_query_as().fetch_optional(pool).await
}

/// The parts of a mirror row the read API leaves out.
#[derive(Debug, Clone)]
pub struct RowExtras {
    /// Seam's whole object as stored (PINs redacted unless `store_pins`).
    pub access_code: Option<Json<Value>>,
    pub status_changed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

pub async fn row_extras(pool: &PgPool, access_code_id: &str) -> sqlx::Result<Option<RowExtras>> {
    sqlx::query_as!(
        RowExtras,
        r#"SELECT access_code AS "access_code: Json<Value>", status_changed_at, created_at
           FROM access_codes WHERE access_code_id = $1"#,
        access_code_id,
    )
    .fetch_optional(pool)
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_search_matches_its_text_literally() {
        assert_eq!(super::like_escaped(r"50%_off\"), r"50\%\_off\\");
    }
}
