//! The operator console: off without tokens, sign-in and sessions, CSRF on every
//! POST, the security headers, escaping, and what each page shows.

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::*;

const TOKEN: &str = "console-token-0123456789abcdef0123456789";
const OTHER_TOKEN: &str = "console-other-0123456789abcdef0123456789";

async fn console_app(pool: &PgPool, extra: &str) -> TestApp {
    let tokens = format!("[api]\ntokens = \"{TOKEN} {OTHER_TOKEN}\"");
    spawn_app_with(pool.clone(), settings_with("http://127.0.0.1:9", &[&tokens, extra])).await
}

/// A browser of sorts: no redirects followed, cookies kept by hand.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

/// The hidden `csrf` field of the first form in `html`.
fn csrf_field(html: &str) -> String {
    let start = html.find(r#"name="csrf" value=""#).expect("a csrf field") + r#"name="csrf" value=""#.len();
    html[start..].split('"').next().unwrap().to_owned()
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { http, base: app.address.clone(), cookies: Vec::new() }
    }

    fn keep(&mut self, response: &reqwest::Response) {
        for cookie in set_cookies(response.headers()) {
            let (pair, _) = cookie.split_once(';').unwrap_or((&cookie, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn get(&mut self, path: &str) -> reqwest::Response {
        let response =
            self.http.get(format!("{}{path}", self.base)).header("cookie", self.cookie_header()).send().await.unwrap();
        self.keep(&response);
        response
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(form))
            .send()
            .await
            .unwrap();
        self.keep(&response);
        response
    }

    /// Signs in with `token`; the sign-in answer.
    async fn sign_in(&mut self, token: &str) -> reqwest::Response {
        let form = self.get("/console/sign-in").await.text().await.unwrap();
        let csrf = csrf_field(&form);
        self.post("/console/sign-in", &[("token", token), ("csrf", &csrf)]).await
    }

    /// A page's HTML and the CSRF token of its forms.
    async fn page(&mut self, path: &str) -> (String, String) {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let html = response.text().await.unwrap();
        let csrf = csrf_field(&html);
        (html, csrf)
    }
}

/// Codes of every kind the table sorts, one named like an attack, one failing.
async fn seed(pool: &PgPool) {
    sqlx::query(
        r#"
        INSERT INTO access_codes
            (access_code_id, device_id, workspace_id, name, type, status, warnings, errors, code, access_code,
             deleted_at, fetched_at, updated_at)
        VALUES
            ('ac_ok', 'dev_1', 'ws', 'Front door', 'ongoing', 'set', '[]', '[]', '4821', '{"code":"[redacted]"}', NULL, now(), now() - interval '5 hours'),
            ('ac_warn', 'dev_1', 'ws', 'Back door', 'ongoing', 'setting', '[{"warning_code":"delay_in_setting_on_device","message":"slow"}]', '[]', NULL, '{}', NULL, now(), now() - interval '4 hours'),
            ('ac_fail', 'dev_2', 'ws', 'Garage', 'ongoing', 'setting', '[]', '[{"error_code":"failed_to_set_on_device","message":"<b>lock</b> said no"},{"error_code":"brand_new_code","message":"?"}]', NULL, '{}', NULL, now(), now() - interval '3 hours'),
            ('ac_xss', 'dev_3', 'ws_2', '<img src=x onerror=alert(1)>', 'ongoing', 'set', '[]', '[]', NULL, '{}', NULL, now(), now() - interval '2 hours'),
            ('ac_gone', 'dev_3', 'ws_2', 'Old', 'ongoing', 'set', '[]', '[{"error_code":"failed_to_set_on_device"}]', NULL, '{}', now(), now(), now())
        "#,
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        r#"INSERT INTO access_code_history (access_code_id, change, previous_status, status, warnings, errors, event_type, fetched_at, created_at)
           VALUES ('ac_fail', 'created', NULL, 'setting', '[]', '[]', 'access_code.created', now(), now() - interval '3 hours'),
                  ('ac_fail', 'changed', 'setting', 'setting', '[]', '[{"error_code":"failed_to_set_on_device"}]', 'access_code.failed_to_set_on_device', now(), now() - interval '1 hour')"#,
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn dead_letter(pool: &PgPool, id: &str) {
    sqlx::query(
        "INSERT INTO access_code_refetches (access_code_id, endpoint, attempts, dead_lettered_at, last_error, next_attempt_at)
         VALUES ($1, 'managed', 150, now(), 'HTTP 400: invalid_input: no (seam-request-id: req_1)', now())",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

fn rows_in_order(html: &str) -> Vec<String> {
    html.split(r#"data-access-code-id=""#).skip(1).map(|rest| rest.split('"').next().unwrap().to_owned()).collect()
}

#[sqlx::test]
async fn without_api_tokens_there_is_no_console(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    for path in ["/console", "/console/sign-in", "/console/codes", "/console/changes"] {
        assert_eq!(app.get(path).await.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[sqlx::test]
async fn sign_in_refuses_a_wrong_token_and_a_missing_csrf_token_and_sets_a_strict_cookie(pool: PgPool) {
    let app = console_app(&pool, "").await;
    let mut browser = Browser::new(&app);
    let wrong = browser.sign_in("wrong-token-0123456789abcdef0123456789").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookies(wrong.headers()).iter().all(|c| !c.starts_with("sas_console=")), "no session");
    assert!(wrong.text().await.unwrap().contains("not one of the configured API tokens"));

    // No CSRF field; a field without its cookie; a field that is not the cookie's.
    let mut fresh = Browser::new(&app);
    fresh.get("/console/sign-in").await;
    for form in [vec![("token", TOKEN)], vec![("token", TOKEN), ("csrf", "made-up")]] {
        let refused = fresh.post("/console/sign-in", &form).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(set_cookies(refused.headers()).is_empty());
    }
    let mut cookieless = Browser::new(&app);
    let csrf = csrf_field(&cookieless.get("/console/sign-in").await.text().await.unwrap());
    cookieless.cookies.clear();
    assert_eq!(
        cookieless.post("/console/sign-in", &[("token", TOKEN), ("csrf", &csrf)]).await.status(),
        StatusCode::FORBIDDEN
    );

    let mut browser = Browser::new(&app);
    let signed_in = browser.sign_in(OTHER_TOKEN).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_in.headers()["location"], "/console/codes");
    let session = set_cookies(signed_in.headers()).into_iter().find(|c| c.starts_with("sas_console=")).unwrap();
    let attributes: Vec<&str> = session.split("; ").skip(1).collect();
    assert_eq!(attributes, ["Path=/console", "Max-Age=28800", "HttpOnly", "SameSite=Strict"], "{session}");
    assert_eq!(browser.get("/console/codes").await.status(), StatusCode::OK);

    // Behind a TLS terminator (X-Forwarded-Proto: https) the cookie is Secure.
    let http = Browser::new(&app).http;
    let form =
        http.get(format!("{}/console/sign-in", app.address)).header("x-forwarded-proto", "https").send().await.unwrap();
    let nonce_cookie = set_cookies(form.headers()).remove(0);
    assert!(nonce_cookie.ends_with("; Secure"), "{nonce_cookie}");
    let nonce = nonce_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    let secure = http
        .post(format!("{}/console/sign-in", app.address))
        .header("x-forwarded-proto", "https")
        .header("cookie", format!("sas_console_sign_in={nonce}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("token", TOKEN), ("csrf", nonce.as_str())]))
        .send()
        .await
        .unwrap();
    assert_eq!(secure.status(), StatusCode::SEE_OTHER, "{:?}", secure.headers());
    let session = set_cookies(secure.headers()).into_iter().find(|c| c.starts_with("sas_console=")).unwrap();
    assert!(session.ends_with("HttpOnly; SameSite=Strict; Secure"), "{session}");
}

#[sqlx::test]
async fn pages_and_actions_need_a_valid_session(pool: PgPool) {
    seed(&pool).await;
    let app = console_app(&pool, "").await;
    let mut stranger = Browser::new(&app);
    for path in ["/console/codes", "/console/codes/ac_ok", "/console/health"] {
        let response = stranger.get(path).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(response.headers()["location"], "/console/sign-in");
    }
    stranger.cookies.push(("sas_console".into(), "AAAAAAAAAAAAAAAAAAAAAA.99999999999.AAAA".into()));
    assert_eq!(stranger.get("/console/codes").await.status(), StatusCode::SEE_OTHER, "a forged cookie");
    assert_eq!(
        stranger.post("/console/codes/ac_ok/refetch", &[("csrf", "x")]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(stranger.get("/console/changes").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(count(&pool, "access_code_refetches").await, 0);

    // A session ends when it expires.
    let mut browser = Browser::new(&app);
    browser.sign_in(TOKEN).await;
    assert_eq!(browser.get("/console/codes").await.status(), StatusCode::OK);
    app.clock.set(NOW + 8 * 3600);
    assert_eq!(browser.get("/console/codes").await.status(), StatusCode::SEE_OTHER);
}

#[sqlx::test]
async fn a_post_without_its_sessions_csrf_token_is_refused_and_changes_nothing(pool: PgPool) {
    seed(&pool).await;
    dead_letter(&pool, "ac_fail").await;
    let app = console_app(&pool, "").await;
    let mut other = Browser::new(&app);
    other.sign_in(TOKEN).await;
    let (_, other_csrf) = other.page("/console/codes").await;
    let mut browser = Browser::new(&app);
    browser.sign_in(TOKEN).await;
    let (_, csrf) = browser.page("/console/codes/ac_ok").await;
    assert_ne!(csrf, other_csrf, "one token per session");

    let queue = || async {
        sqlx::query_as::<_, (String, bool)>(
            "SELECT access_code_id, dead_lettered_at IS NOT NULL FROM access_code_refetches ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let before = queue().await;
    for form in
        [vec![], vec![("csrf", "")], vec![("csrf", other_csrf.as_str())], vec![("csrf", "x".repeat(43).as_str())]]
    {
        for path in ["/console/codes/ac_ok/refetch", "/console/dead-letters/ac_fail/redrive", "/console/sign-out"] {
            let response = browser.post(path, &form).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path} {form:?}");
            assert!(response.text().await.unwrap().contains("nothing was done"));
        }
    }
    assert_eq!(queue().await, before, "nothing changed");
    assert_eq!(browser.get("/console/codes").await.status(), StatusCode::OK, "still signed in");

    // With the token: done.
    let refetched = browser.post("/console/codes/ac_ok/refetch", &[("csrf", &csrf)]).await;
    assert_eq!(refetched.status(), StatusCode::SEE_OTHER);
    assert_eq!(refetched.headers()["location"], "/console/codes/ac_ok?done=refetch");
    let redriven = browser.post("/console/dead-letters/ac_fail/redrive", &[("csrf", &csrf)]).await;
    assert_eq!(redriven.status(), StatusCode::SEE_OTHER);
    assert_eq!(queue().await, vec![("ac_fail".to_owned(), false), ("ac_ok".to_owned(), false)]);
    assert_eq!(
        browser.post("/console/dead-letters/ac_ok/redrive", &[("csrf", &csrf)]).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        browser.post("/console/codes/ac_nope/refetch", &[("csrf", &csrf)]).await.status(),
        StatusCode::NOT_FOUND
    );
    let out = browser.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(browser.get("/console/codes").await.status(), StatusCode::SEE_OTHER, "signed out");
}

#[sqlx::test]
async fn every_console_answer_carries_a_csp_without_unsafe_inline(pool: PgPool) {
    seed(&pool).await;
    let app = console_app(&pool, "").await;
    let mut browser = Browser::new(&app);
    let sign_in = browser.get("/console/sign-in").await;
    let mut answers = vec![sign_in];
    browser.sign_in(TOKEN).await;
    for path in [
        "/console/codes",
        "/console/codes/ac_fail",
        "/console/health",
        "/console/codes/nope",
        "/console/codes?status=bogus",
    ] {
        answers.push(browser.get(path).await);
    }
    answers.push(browser.post("/console/codes/ac_ok/refetch", &[]).await);
    let html = browser.get("/console/codes").await.text().await.unwrap();
    let script = html.split(r#"<script src=""#).nth(1).unwrap().split('"').next().unwrap().to_owned();
    let style = html.split(r#"<link rel="stylesheet" href=""#).nth(1).unwrap().split('"').next().unwrap().to_owned();
    assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style");
    for asset in [&script, &style] {
        let response = browser.get(asset).await;
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        assert!(response.headers()["cache-control"].to_str().unwrap().contains("immutable"));
        answers.push(response);
    }
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 404, 400, 403, 200, 200]);
    for response in &answers {
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
}

#[sqlx::test]
async fn strings_from_seam_and_from_requests_are_escaped(pool: PgPool) {
    seed(&pool).await;
    let app = console_app(&pool, "").await;
    let mut browser = Browser::new(&app);
    browser.sign_in(TOKEN).await;
    let (codes, _) = browser.page("/console/codes").await;
    assert!(codes.contains("&lt;img src=x onerror=alert(1)&gt;"), "shown as text");
    assert!(!codes.contains("<img src=x"));
    let (code, _) = browser.page("/console/codes/ac_xss").await;
    assert!(code.contains("<h1>&lt;img src=x onerror=alert(1)&gt;</h1>"), "{code}");
    let (failing, _) = browser.page("/console/codes/ac_fail").await;
    assert!(failing.contains("&lt;b&gt;lock&lt;/b&gt; said no") && !failing.contains("<b>lock"));
    let probe = "\"><script>alert(1)</script>";
    let (searched, _) = browser.page(&format!("/console/codes?q={}", urlencode(probe))).await;
    assert!(searched.contains("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"), "reflected, escaped");
    assert!(!searched.contains("<script>alert"));
}

fn form_body(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v))).collect::<Vec<_>>().join("&")
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[sqlx::test]
async fn the_codes_table_puts_problems_first_and_filters_searches_and_pages(pool: PgPool) {
    seed(&pool).await;
    let app = console_app(&pool, "").await;
    let mut browser = Browser::new(&app);
    browser.sign_in(TOKEN).await;
    let (html, _) = browser.page("/console/codes").await;
    assert_eq!(rows_in_order(&html), ["ac_fail", "ac_warn", "ac_xss", "ac_ok", "ac_gone"]);
    assert!(html.contains("2 errors") && html.contains("failed_to_set_on_device, brand_new_code"));
    assert!(html.contains("1 h ago"), "the last change and how long ago");
    let cases = [
        ("status=setting", vec!["ac_fail", "ac_warn"]),
        ("errors=true", vec!["ac_fail", "ac_gone"]),
        ("errors=true&deleted=false", vec!["ac_fail"]),
        ("warnings=true", vec!["ac_warn"]),
        ("deleted=true", vec!["ac_gone"]),
        ("device_id=dev_1", vec!["ac_warn", "ac_ok"]),
        ("workspace_id=ws_2", vec!["ac_xss", "ac_gone"]),
        ("q=door", vec!["ac_warn", "ac_ok"]),
        ("q=ac_gone", vec!["ac_gone"]),
        ("q=%25", vec![]),
        ("status=&errors=&q=", vec!["ac_fail", "ac_warn", "ac_xss", "ac_ok", "ac_gone"]),
    ];
    for (query, expected) in cases {
        let (html, _) = browser.page(&format!("/console/codes?{query}")).await;
        assert_eq!(rows_in_order(&html), expected, "{query}");
    }
    for bad in ["status=bogus", "errors=maybe", "page=0", "page=x", "unknown=1"] {
        assert_eq!(browser.get(&format!("/console/codes?{bad}")).await.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    // Paging: 50 a page.
    let many: Vec<String> = (0..60).map(|i| format!("('ac_p{i:02}', 'set', '[]', '[]', now())")).collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO access_codes (access_code_id, status, warnings, errors, fetched_at) VALUES {}",
        many.join(",")
    )))
    .execute(&pool)
    .await
    .unwrap();
    let (first, _) = browser.page("/console/codes?status=set").await;
    let (second, _) = browser.page("/console/codes?status=set&page=2").await;
    assert_eq!((rows_in_order(&first).len(), rows_in_order(&second).len()), (50, 13));
    assert!(first.contains("Page 1 of 2") && first.contains("href=\"/console/codes?status=set&amp;page=2\""));
}

#[sqlx::test]
async fn the_code_page_explains_each_problem_and_shows_the_timeline_and_every_field(pool: PgPool) {
    seed(&pool).await;
    let app = console_app(&pool, "").await;
    let mut browser = Browser::new(&app);
    browser.sign_in(TOKEN).await;
    let (html, _) = browser.page("/console/codes/ac_fail").await;
    for expected in [
        "failed_to_set_on_device",
        "Seam could not program the code on the lock.",
        "backup access code",
        "brand_new_code",
        "No explanation is known for this code",
        "access_code.failed_to_set_on_device",
        "setting → setting",
        "Re-fetch now",
        "fetched_at",
        "connected_account_id",
    ] {
        assert!(html.contains(expected), "{expected} missing");
    }
    assert!(!html.contains("code (PIN)"), "no PIN without store_pins");
    let (ok, _) = browser.page("/console/codes/ac_ok").await;
    assert!(!ok.contains("4821"));
    assert_eq!(browser.get("/console/codes/nope").await.status(), StatusCode::NOT_FOUND);

    let pins = console_app(&pool, "store_pins = true").await;
    let mut browser = Browser::new(&pins);
    browser.sign_in(TOKEN).await;
    let (html, _) = browser.page("/console/codes/ac_ok").await;
    assert!(html.contains("code (PIN)") && html.contains("4821"));
}

#[sqlx::test]
async fn the_health_page_shows_the_queue_dead_letters_and_each_workspaces_jobs(pool: PgPool) {
    dead_letter(&pool, "ac_dead").await;
    sqlx::query(
        "INSERT INTO catch_up_state (workspace_key, workspace_label, high_water_mark, last_run_at, last_outcome, last_events_found, last_events_new, last_error)
         VALUES ('ws_a', 'Harbour View', now(), now(), 'failed', 3, 1, 'HTTP 401: unauthorized (seam-request-id: req_9)')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let app = console_app(&pool, "").await;
    let mut browser = Browser::new(&app);
    browser.sign_in(TOKEN).await;
    let (html, _) = browser.page("/console/health").await;
    for expected in [
        "1 dead letter(s)",
        "ac_dead",
        "HTTP 400: invalid_input: no (seam-request-id: req_1)",
        "aria-label=\"Redrive ac_dead\"",
        "Harbour View (ws_a)",
        "HTTP 401: unauthorized (seam-request-id: req_9)",
        "last webhook",
        "SEAM_API_KEY",
        "due now",
    ] {
        assert!(html.contains(expected), "{expected} missing");
    }
}

#[sqlx::test]
async fn the_console_stream_sends_changes_with_the_session_cookie(pool: PgPool) {
    let app = console_app(&pool, "").await;
    let mut browser = Browser::new(&app);
    browser.sign_in(TOKEN).await;
    let response = browser.get("/console/changes").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = crate::changes::EventStream::of(response);
    sqlx::query(
        "INSERT INTO access_code_history (access_code_id, change, status, warnings, errors, fetched_at)
         VALUES ('ac_live', 'created', 'set', '[]', '[{\"error_code\":\"x\"}]', now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("SELECT pg_notify('access_code_changed', '')").execute(&pool).await.unwrap();
    let events = stream.events(1).await;
    assert_eq!(events[0].1["access_code_id"], "ac_live");
    assert_eq!(events[0].1["errors"], json!(1));
    // A page read before that change asks for the changes after what it saw.
    let mut resumed = crate::changes::EventStream::of(browser.get("/console/changes?last_event_id=0").await);
    assert_eq!(resumed.events(1).await, events);
}
