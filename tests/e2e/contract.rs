//! The contract check itself: the harness's front holds every Seam call to Seam's own
//! OpenAPI document (`@seamapi/types`), and `E2e::finish` fails a test that broke it.
//! Here: that a call the document refuses IS flagged (so the check can fail), and the
//! harness's smoke test (`smoke.mjs`: every control route, every fix of the fake's
//! answers, the contract report) passes.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::rig::{Harness, contract_verdict};

fn texts(report: &Value) -> String {
    report["violations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v["text"].as_str().unwrap_or("?").to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn calls_the_document_refuses_are_flagged_and_fail_the_verdict() {
    let harness = Harness::start().await;
    let info = &harness.info;
    let http = reqwest::Client::new();
    let seam = |path: &str| format!("{}{path}", info.seam_api_url);

    // Documented calls with documented answers: nothing to report.
    let answer = http.get(seam("/devices/list")).bearer_auth(&info.api_key).send().await.expect("GET /devices/list");
    assert_eq!(answer.status(), 200);
    let report = harness.contract_report().await;
    assert_eq!(report["requests_checked"], 1, "{report}");
    assert_eq!(contract_verdict(&report), Ok(()), "{report}");

    // An event type outside the document's enum and a parameter it does not have.
    let answer = http
        .post(seam("/events/list"))
        .bearer_auth(&info.api_key)
        .json(&json!({
            "since": "2024-01-01T00:00:00.000Z",
            "event_types": ["access_code.set_on_device", "access_code.made_up"],
            "made_up_filter": true,
        }))
        .send()
        .await
        .expect("POST /events/list");
    assert_eq!(answer.status(), 200, "the fake still answers; the front records what it found");
    // An id that is not a uuid (`format: uuid`), and a route Seam does not have.
    http.get(seam("/access_codes/get"))
        .query(&[("access_code_id", "access_code1")])
        .bearer_auth(&info.api_key)
        .send()
        .await
        .expect("GET /access_codes/get");
    http.post(seam("/access_codes/made_up")).bearer_auth(&info.api_key).json(&json!({})).send().await.expect("POST");

    let report = harness.contract_report().await;
    let found = texts(&report);
    assert_eq!(report["requests_checked"], 4, "{report}");
    for expected in [
        "POST /events/list: body/event_types/1: must be equal to one of the allowed values",
        "unknown body parameter 'made_up_filter'",
        "GET /access_codes/get: query.access_code_id: must match format \"uuid\"",
        "/access_codes/made_up is not in Seam's OpenAPI document",
    ] {
        assert!(found.contains(expected), "expected a violation {expected:?} in:\n{found}");
    }
    assert!(!found.contains("event_types/0"), "the documented type passes:\n{found}");
    let verdict = contract_verdict(&report).expect_err("violations fail the verdict");
    assert!(
        verdict.contains("violation(s) of Seam's OpenAPI document") && verdict.contains("made_up_filter"),
        "{verdict}"
    );

    harness.reset_contract_report().await;
    assert_eq!(contract_verdict(&harness.contract_report().await), Ok(()));
}

#[test]
fn the_harness_smoke_test_passes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("e2e");
    assert!(
        dir.join("node_modules").is_dir(),
        "{}/node_modules is missing: run `npm ci` in tests/e2e (cd tests/e2e && npm ci)",
        dir.display()
    );
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
    let output = Command::new(&node)
        .arg(dir.join("smoke.mjs"))
        .current_dir(&dir)
        .env_remove("E2E_HARNESS_IGNORE_STDIN")
        .output()
        .unwrap_or_else(|e| panic!("{node} smoke.mjs: {e} (the e2e tests need Node >= 20.9 on PATH, or NODE=)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node tests/e2e/smoke.mjs failed ({}):\n{stdout}\n--- stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
