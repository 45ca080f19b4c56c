//! The operator console in a real browser: Debian's headless Chromium driven over
//! WebDriver (chromedriver) with fantoccini, against the real binary and Seam's fake
//! holding demo-like codes. Signs in (a wrong token first), finds the failing code
//! flagged, reads its explanation and timeline, re-fetches it and watches it change
//! without a reload, watches a row of the table change live, redrives a dead letter,
//! shows a code named like an attack as text, and sees a form without its CSRF token
//! refused. Saves a screenshot of each page (with `UPDATE_SCREENSHOTS=1`, into `docs/`,
//! which the README shows; otherwise into the target directory).
//!
//! Needs `chromium` and `chromedriver` on PATH (Debian: `apt-get install chromium
//! chromium-driver`; `.ci/run` installs them; `CHROMEDRIVER` and `CHROMIUM` override).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use test_kit::eventually;

use crate::rig::{E2e, OPERATOR_TOKEN};

/// chromedriver, a child process killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn program(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.to_owned())
}

async fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let chromedriver = program("CHROMEDRIVER", "chromedriver");
    let child = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {chromedriver} ({e}): the browser tests need Chromium and its driver \
                 (Debian: apt-get install chromium chromium-driver; .ci/run installs them)"
            )
        });
    let driver = Driver { child, port };
    let http = reqwest::Client::new();
    eventually("chromedriver to answer /status", || async {
        let status = http.get(format!("http://127.0.0.1:{port}/status")).send().await.map_err(|e| e.to_string())?;
        status.status().is_success().then_some(()).ok_or_else(|| status.status().to_string())
    })
    .await;
    driver
}

async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    let args =
        ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100"];
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": program("CHROMIUM", "/usr/bin/chromium"), "args": args }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

/// The text of the first element matching `css`, waiting for it.
async fn text(client: &Client, css: &str) -> String {
    let element = client.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await;
    element.unwrap_or_else(|e| panic!("no {css}: {e}")).text().await.unwrap()
}

/// Waits until the page's text for `css` satisfies `done`.
async fn until_text(client: &Client, css: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    eventually(what, || async {
        let found = client.find(Locator::Css(css)).await.map_err(|e| e.to_string())?;
        let text = found.text().await.map_err(|e| e.to_string())?;
        if done(&text) {
            return Ok(text);
        }
        let page = "return [document.body.dataset.changesAfter || null, \
                    (document.getElementById('live-status') || {}).textContent || null]";
        let live = client.execute(page, vec![]).await.map_err(|e| e.to_string())?;
        Err(format!("{text} (stream after: {}, live status: {})", live[0], live[1]))
    })
    .await
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real picture of {name}");
    let dir = if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

/// A marker that survives only as long as the page is not reloaded.
async fn mark_page(client: &Client) {
    client.execute("window.__notReloaded = true", vec![]).await.unwrap();
}

async fn still_marked(client: &Client) -> bool {
    client.execute("return window.__notReloaded === true", vec![]).await.unwrap() == json!(true)
}

/// The demo's codes (scripts/demo): a success, a delay, a failure, a removal, a
/// time-bound guest code, and one named like an attack. Returns (Carol's, Bob's,
/// Alice's) ids.
async fn demo_codes(e2e: &E2e) -> (String, String, String) {
    let fake = &e2e.harness;
    let now = Utc::now().to_rfc3339();
    let create = |name: &'static str, device: usize| async move {
        let (code, created) = fake.create_code(device, name, json!({})).await;
        e2e.deliver(&created).await;
        let id = code["access_code_id"].as_str().unwrap().to_owned();
        e2e.applied(&id, &created).await;
        id
    };
    let alice = create("Front door (Alice)", 0).await;
    e2e.step(&alice, json!({ "status": "set" }), "access_code.set_on_device", json!({})).await;
    let bob = create("Back door (Bob)", 1).await;
    let delay = json!({ "warning_code": "delay_in_setting_on_device", "message": "Code programming is delayed; the lock has not confirmed it yet.", "created_at": now });
    e2e.step(
        &bob,
        json!({ "warnings": [delay] }),
        "access_code.delay_in_setting_on_device",
        json!({ "access_code_warnings": [delay] }),
    )
    .await;
    let carol = create("Garage (Carol)", 2).await;
    let failure = json!({ "error_code": "failed_to_set_on_device", "message": "The lock rejected the code.", "is_access_code_error": true, "created_at": now });
    e2e.step(
        &carol,
        json!({ "errors": [failure] }),
        "access_code.failed_to_set_on_device",
        json!({ "access_code_errors": [failure] }),
    )
    .await;
    let dave = create("Side gate (Dave)", 0).await;
    e2e.step(&dave, json!({ "status": "set" }), "access_code.set_on_device", json!({})).await;
    fake.delete_code(&dave).await;
    let removed = fake.event("access_code.removed_from_device", &dave, json!({})).await;
    e2e.deliver(&removed).await;
    e2e.applied(&dave, &removed).await;
    let starts = Utc::now() + chrono::Duration::days(2);
    let (eve, created) = fake
        .create_code(
            1,
            "Guest (Eve, weekend)",
            json!({ "starts_at": starts.to_rfc3339(), "ends_at": (starts + chrono::Duration::days(2)).to_rfc3339() }),
        )
        .await;
    e2e.deliver(&created).await;
    e2e.applied(eve["access_code_id"].as_str().unwrap(), &created).await;
    create("<img src=x onerror=alert(1)>", 2).await;
    (carol, bob, alice)
}

#[sqlx::test]
async fn an_operator_finds_fixes_and_redrives_in_the_browser_console(_: PgPoolOptions, database: PgConnectOptions) {
    let e2e = E2e::start(database).await;
    let (carol, bob, alice) = demo_codes(&e2e).await;
    let driver = start_driver().await;
    let client = browser(&driver).await;
    let base = e2e.service.url();

    // Signed out: the console sends us to sign in; a wrong token is refused.
    client.goto(&format!("{base}/console")).await.unwrap();
    assert!(client.current_url().await.unwrap().as_str().ends_with("/console/sign-in"));
    let token = client.find(Locator::Css("input#token")).await.unwrap();
    token.send_keys("wrong-token-0123456789abcdef0123456789").await.unwrap();
    client.find(Locator::Css("form.sign-in button")).await.unwrap().click().await.unwrap();
    assert!(text(&client, "p.error").await.contains("not one of the configured API tokens"));
    assert!(client.find(Locator::Css("nav[aria-label=Console]")).await.is_err(), "not signed in");

    // Signed in (by keyboard: type the token, Enter).
    let token = client.find(Locator::Css("input#token")).await.unwrap();
    token.send_keys(&format!("{OPERATOR_TOKEN}\u{E007}")).await.unwrap();
    until_text(&client, "h1", "the codes page", |t| t == "Access codes").await;

    // The failing code is flagged first; the one named like an attack is text.
    let first = text(&client, "table.codes tbody tr").await;
    assert!(first.contains("Garage (Carol)") && first.contains("1 error"), "{first}");
    assert!(first.contains("failed_to_set_on_device"), "{first}");
    let names: Vec<String> = {
        let mut names = Vec::new();
        for link in client.find_all(Locator::Css("table.codes tbody th a")).await.unwrap() {
            names.push(link.text().await.unwrap());
        }
        names
    };
    assert!(names.contains(&"<img src=x onerror=alert(1)>".to_owned()), "{names:?}");
    assert!(client.find_all(Locator::Css("table.codes img")).await.unwrap().is_empty(), "no image made");
    assert!(client.get_alert_text().await.is_err(), "no alert ran");
    until_text(&client, "#live-status", "the live stream to connect", |t| t.contains("on")).await;
    screenshot(&client, "console-codes.png").await;

    // A row changes live: Bob's lock confirms the code while the table is open.
    mark_page(&client).await;
    e2e.step(&bob, json!({ "status": "set", "warnings": [] }), "access_code.set_on_device", json!({})).await;
    let bob_row = format!("tr[data-access-code-id=\"{bob}\"]");
    until_text(&client, &bob_row, "Bob's row to show `set` without a reload", |t| t.contains("✓ set")).await;
    assert!(still_marked(&client).await, "updated in place, not reloaded");

    // The failing code: its error explained, its timeline.
    client.find(Locator::LinkText("Garage (Carol)")).await.unwrap().click().await.unwrap();
    until_text(&client, "h1", "Carol's page", |t| t == "Garage (Carol)").await;
    let problems = text(&client, "ul.problems").await;
    assert!(problems.contains("failed_to_set_on_device"), "{problems}");
    assert!(problems.contains("Seam could not program the code on the lock."), "{problems}");
    assert!(problems.contains("backup access code"), "the remedy from Seam's guide: {problems}");
    let timeline = text(&client, "table.timeline").await;
    assert!(
        timeline.contains("access_code.failed_to_set_on_device") && timeline.contains("access_code.created"),
        "{timeline}"
    );
    screenshot(&client, "console-code.png").await;

    // Fixed in Seam; "Re-fetch now"; the page changes by itself once the worker has it.
    e2e.harness.set_state(&carol, json!({ "status": "set", "errors": [] })).await;
    client.find(Locator::Css("form.refetch button")).await.unwrap().click().await.unwrap();
    until_text(&client, "p.notice", "the re-fetch to be queued", |t| t.contains("Re-fetch queued")).await;
    mark_page(&client).await;
    until_text(&client, "p.summary", "Carol's code to show `set` live", |t| t.contains("set") && t.contains("0 error"))
        .await;
    assert!(still_marked(&client).await, "updated in place, not reloaded");
    assert!(text(&client, "table.timeline").await.contains("errors_changed"));

    // A form without its CSRF token is refused and does nothing.
    let refetch = format!("/console/codes/{alice}/refetch");
    let forged = "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0]; \
                  document.body.appendChild(f); f.submit();";
    client.execute(forged, vec![Value::String(refetch)]).await.unwrap();
    until_text(&client, "h1", "the refusal", |t| t == "Refused").await;
    assert!(text(&client, "main").await.contains("nothing was done"));
    assert_eq!(e2e.queue_row(&alice).await, None, "no re-fetch queued");

    // A dead letter, redriven from the health page.
    sqlx::query(
        "INSERT INTO access_code_refetches (access_code_id, endpoint, attempts, dead_lettered_at, last_error, next_attempt_at)
         VALUES ($1, 'managed', 150, now(), 'HTTP 400: invalid_input: the lock is busy (seam-request-id: req_demo1)', now())",
    )
    .bind(&alice)
    .execute(&e2e.db)
    .await
    .unwrap();
    client.goto(&format!("{base}/console/health")).await.unwrap();
    let dead = text(&client, "table.dead").await;
    assert!(dead.contains(&alice) && dead.contains("seam-request-id: req_demo1"), "{dead}");
    screenshot(&client, "console-health.png").await;
    let redrive = format!("button[aria-label=\"Redrive {alice}\"]");
    client.find(Locator::Css(&redrive)).await.unwrap().click().await.unwrap();
    until_text(&client, "p.notice", "the redrive", |t| t.contains("redriven")).await;
    e2e.settled(&alice).await;
    assert_eq!(e2e.count("access_code_refetches").await, 0, "fetched again, no dead letter left");

    client.close().await.unwrap();
    e2e.finish().await;
}
