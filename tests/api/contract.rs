//! The Seam these tests fake, held to Seam's own OpenAPI document (npm
//! `@seamapi/types`, checked by `node tests/e2e/contract.mjs`): the kit's stand-in's
//! answers (a found code, an unmanaged code, 404s, an event page, error answers), the
//! fixtures the tests build Seam's answers from, and the `/events/list` requests the
//! service's catch-up sends. A fixture that drifts from what Seam documents fails here.
//! (The service's requests to the fake, and its answers, are checked in the e2e suite.)

use std::path::PathBuf;
use std::process::Command;

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use test_kit::{Mode, StandIn};

use crate::helpers::*;

const MANAGED: &str = "0f3a2b1c-4d5e-4f60-8a7b-9c8d7e6f5a4b";
const UNMANAGED: &str = "1a2b3c4d-5e6f-4a0b-9c1d-2e3f4a5b6c7d";
const MISSING: &str = "2b3c4d5e-6f70-4b1c-8d2e-3f4a5b6c7d8e";
const TIME_BOUND: &str = "3c4d5e6f-7081-4c2d-9e3f-4a5b6c7d8e9f";
const BACKUP: &str = "4d5e6f70-8192-4d3e-8f4a-5b6c7d8e9fa0";

/// One thing to check: an answer (`status`, `body`) or a request (`query`, `body`).
struct Case {
    label: String,
    kind: &'static str,
    method: &'static str,
    path: &'static str,
    status: u16,
    query: String,
    body: Value,
}

fn response(label: &str, method: &'static str, path: &'static str, (status, body): (u16, Value)) -> Case {
    Case { label: label.to_owned(), kind: "response", method, path, status, query: String::new(), body }
}

fn found(label: &str, code: Value) -> Case {
    response(label, "GET", "/access_codes/get", (200, json!({ "access_code": code, "ok": true })))
}

/// `node tests/e2e/contract.mjs check-batch` on every case; fails with its report
/// unless no case breaks the document.
fn check_against_seams_document(cases: &[Case]) {
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("e2e");
    assert!(
        ["@seamapi/types", "ajv", "ajv-formats"].iter().all(|package| e2e.join("node_modules").join(package).is_dir()),
        "{}/node_modules is missing or stale: this test checks the fixtures against Seam's OpenAPI document with \
         npm `@seamapi/types` and `ajv`. Run `npm ci` in tests/e2e (cd tests/e2e && npm ci) and try again.",
        e2e.display()
    );
    let batch: Vec<Value> = cases
        .iter()
        .map(|c| {
            json!({"label": c.label, "kind": c.kind, "method": c.method, "path": c.path, "status": c.status,
                   "query": c.query, "body": c.body})
        })
        .collect();
    let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("seam-contract-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec_pretty(&batch).unwrap()).expect("write the cases");
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
    let output =
        Command::new(&node).arg(e2e.join("contract.mjs")).arg("check-batch").arg(&file).output().unwrap_or_else(|e| {
            panic!("{node} tests/e2e/contract.mjs: {e} (this test needs Node >= 20 on PATH, or NODE=)")
        });
    let _ = std::fs::remove_file(&file);
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}");
    assert!(
        output.status.success(),
        "what the tests fake breaks Seam's OpenAPI document ({}):\n{report}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(report.lines().filter(|l| l.starts_with("ok  ")).count(), cases.len(), "every case checked:\n{report}");
}

async fn fetch(http: &reqwest::Client, seam: &StandIn, path: &str, id: &str) -> (u16, Value) {
    let answer = http.get(format!("{}{path}", seam.url())).query(&[("access_code_id", id)]).send().await.unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap_or(Value::Null))
}

#[sqlx::test]
async fn the_stand_in_and_the_fixtures_answer_as_seams_document_says(pool: PgPool) {
    seam_access_sync::install_tls_provider();
    let http = reqwest::Client::new();
    let seam = StandIn::start().await.unwrap();
    seam.set_code(MANAGED, fixtures::access_code(MANAGED));
    seam.set_code(UNMANAGED, fixtures::unmanaged_access_code(UNMANAGED));
    let mut cases = Vec::new();

    // The stand-in's answers to code fetches.
    let get = "/access_codes/get";
    let unmanaged_get = "/access_codes/unmanaged/get";
    cases.push(response("stand-in: a found code", "GET", get, fetch(&http, &seam, get, MANAGED).await));
    cases.push(response(
        "stand-in: an unmanaged code",
        "GET",
        unmanaged_get,
        fetch(&http, &seam, unmanaged_get, UNMANAGED).await,
    ));
    let missing = fetch(&http, &seam, get, MISSING).await;
    assert_eq!(missing.0, 404);
    cases.push(response("stand-in: Seam's 404 for a missing code", "GET", get, missing));
    let elsewhere = fetch(&http, &seam, unmanaged_get, MANAGED).await;
    assert_eq!(elsewhere.0, 404);
    cases.push(response("stand-in: 404 for a managed code on the unmanaged endpoint", "GET", unmanaged_get, elsewhere));
    for status in [401, 429, 500] {
        seam.set_mode(Mode::Status(status));
        cases.push(response(
            &format!("stand-in: Mode::Status({status})"),
            "GET",
            get,
            fetch(&http, &seam, get, MANAGED).await,
        ));
    }
    seam.set_mode(Mode::Normal);

    // The stand-in's answers to a pull of a backup access code: the backup and the
    // original (the stand-in names a new backup `<id>_backup`, not a uuid: here the
    // original already names a uuid one, which a pull answers again); an ongoing code's
    // 400; an unknown code's 404. And the request the service sends.
    let frame = json!({"type": "time_bound", "starts_at": "2026-11-25T10:00:00.000Z", "ends_at": "2026-11-26T10:00:00.000Z",
                       "is_backup_access_code_available": true});
    seam.set_code(
        TIME_BOUND,
        fixtures::with(
            fixtures::access_code(TIME_BOUND),
            fixtures::with(frame.clone(), json!({"pulled_backup_access_code_id": BACKUP})),
        ),
    );
    seam.set_code(
        BACKUP,
        fixtures::with(
            fixtures::access_code(BACKUP),
            fixtures::with(frame, json!({"is_backup": true, "is_backup_access_code_available": false})),
        ),
    );
    let pull = "/access_codes/pull_backup_access_code";
    for (label, id, status) in [
        ("stand-in: a pulled backup", TIME_BOUND, 200),
        ("stand-in: a pull for an ongoing code", MANAGED, 400),
        ("stand-in: a pull for an unknown code", MISSING, 404),
    ] {
        let body = json!({ "access_code_id": id });
        let answer = http.post(format!("{}{pull}", seam.url())).json(&body).send().await.unwrap();
        let answer = (answer.status().as_u16(), answer.json::<Value>().await.unwrap_or(Value::Null));
        assert_eq!(answer.0, status, "{label}: {answer:?}");
        cases.push(response(label, "POST", pull, answer));
    }
    cases.push(Case {
        label: "the service's pull request".into(),
        kind: "request",
        method: "POST",
        path: "/access_codes/pull_backup_access_code",
        status: 0,
        query: String::new(),
        body: json!({ "access_code_id": TIME_BOUND }),
    });

    // The stand-in's event log, every access_code.* type as the tests build events, and
    // the catch-up's requests for it.
    let now = Utc::now();
    let at = |minutes: i64| (now - Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut events: Vec<Value> = fixtures::ACCESS_CODE_EVENT_TYPES
        .iter()
        .enumerate()
        .map(|(i, event_type)| access_code_event(event_type, MANAGED, &at(30 - i as i64)))
        .collect();
    let warning = fixtures::warning("delay_in_setting_on_device", "Hub offline");
    events.push(fixtures::with(
        fixtures::access_code_event("access_code.delay_in_setting_on_device", MANAGED, &at(5)),
        json!({ "access_code_warnings": [warning] }),
    ));
    seam.set_events(events.clone());
    let page = http
        .post(format!("{}/events/list", seam.url()))
        .json(&json!({ "since": at(60), "limit": 500 }))
        .send()
        .await
        .unwrap();
    let page = (page.status().as_u16(), page.json::<Value>().await.unwrap());
    assert_eq!(page.1["events"].as_array().map(Vec::len), Some(events.len()), "{page:?}");
    cases.push(response(
        "stand-in: an /events/list page (helpers::access_code_event, each type)",
        "POST",
        "/events/list",
        page,
    ));
    seam.reset_counts();
    let (catch_up, _) = catch_up(&pool, &seam.url(), "");
    catch_up.run_workspace(0).await.unwrap();
    let requests = seam.event_log_requests();
    assert!(!requests.is_empty(), "the catch-up asked for the event log");
    for body in requests {
        cases.push(Case {
            label: format!("catch-up's request {body}"),
            kind: "request",
            method: "POST",
            path: "/events/list",
            status: 0,
            query: String::new(),
            body,
        });
    }

    // The fixtures the tests answer with, under documented (uuid) ids.
    cases.push(found("fixtures::access_code", fixtures::access_code(MANAGED)));
    cases.push(response(
        "fixtures::unmanaged_access_code",
        "GET",
        unmanaged_get,
        (200, json!({ "access_code": fixtures::unmanaged_access_code(UNMANAGED), "ok": true })),
    ));
    let error = fixtures::error("failed_to_set_on_device", "Lock memory full");
    cases.push(found(
        "worker.rs code_json, with a warning and an error",
        crate::worker::code_json(MANAGED, "setting", json!([warning]), json!([error])),
    ));
    cases.push(found(
        "operations.rs seam_code, with a warning",
        crate::operations::seam_code(MANAGED, "set", json!([warning])),
    ));
    cases.push(found("pins.rs code_with_pending_mutations", crate::pins::code_with_pending_mutations(MANAGED)));
    for status in ["setting", "set", "unset", "removing", "unknown"] {
        cases.push(found(
            &format!("a time-bound code, {status}"),
            fixtures::with(
                fixtures::access_code(MANAGED),
                json!({"type": "time_bound", "status": status, "starts_at": at(-60), "ends_at": at(-120)}),
            ),
        ));
    }

    check_against_seams_document(&cases);
}
