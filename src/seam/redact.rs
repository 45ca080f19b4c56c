//! Keeping PINs out of what the service stores and logs.
//!
//! Seam sends an access code's PIN in many places: the top-level `code` of an event
//! or an access-code object, `from.code` / `to.code` of `access_code.code_changed`,
//! `changed_properties[{property: "code", from, to}]` of `access_code.changed`,
//! `requested_mutations[].from` / `.to` of `access_code.mutations_requested`, and
//! `pending_mutations[].from` / `.to` (`updating_code`) of the access-code object.
//! `redact_pin` is the one function that removes them from JSON before it is stored
//! (`seam_events.payload`, `access_codes.access_code`); the text functions below keep
//! them (and Seam's raw answers) out of logs and `last_error`.

use serde_json::Value;
use serde_json::error::Category;

/// What replaces a PIN in anything stored, unless the user opted in to keeping PINs.
pub const REDACTED: &str = "[redacted]";

/// Lists whose entries each describe a change of an access code: a pending or
/// requested mutation, or a changed property.
const CHANGE_LISTS: [&str; 3] = ["pending_mutations", "requested_mutations", "changed_properties"];

/// Keys whose object value is an access code, or a version of one.
const CODE_OBJECTS: [&str; 4] = ["from", "to", "access_code", "backup_access_code"];

/// Longest Seam error message kept, in characters.
const MAX_MESSAGE_CHARS: usize = 200;
/// Longest Seam error type kept, in characters (types are short snake_case words).
const MAX_TYPE_CHARS: usize = 64;
/// A run of this many digits or more in a text from Seam could be a PIN.
const MIN_PIN_DIGITS: usize = 4;

/// Replaces every PIN in an event or access-code object (and in anything nested in
/// it) with `REDACTED`, generously:
/// - `code` at the top, and in any object that has an `access_code_id` or is the
///   value of `from`, `to`, `access_code` or `backup_access_code`, at any depth;
/// - `code` in every entry of `pending_mutations`, `requested_mutations` and
///   `changed_properties`, and the `from` / `to` values themselves of an entry whose
///   `property` is `code` (any non-null value) or whose `mutation_code` is
///   `updating_code` (when they are plain values rather than objects).
///
/// A null PIN stays null (there is nothing to hide); every other key, `error_code`,
/// `warning_code`, `mutation_code` and `access_code_id` included, is left as it is.
pub fn redact_pin(value: &mut Value) {
    match value {
        Value::Object(map) => map.iter_mut().for_each(|(key, child)| redact_top_level_entry(key, child)),
        other => walk(other),
    }
}

/// `redact_pin` for one entry (`key`: `value`) of the object at the top: its `code`
/// whatever else the object holds, then the rules for any object's entries. For
/// `redact_pin` and for a caller that holds an event's entries apart
/// (`SeamEvent::parse`). The rules cannot reach across top-level entries: an entry
/// whose key and text do not hold `code` (escapes aside) has nothing to redact.
pub fn redact_top_level_entry(key: &str, value: &mut Value) {
    if key == "code" {
        redact_present(Some(value));
    }
    redact_child(key, value);
}

fn walk(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(walk),
        Value::Object(map) => {
            if map.contains_key("access_code_id") {
                redact_present(map.get_mut("code"));
            }
            for (key, child) in map.iter_mut() {
                redact_child(key, child);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

/// The value of `key` in an object: what its key says it holds, then what is in it.
fn redact_child(key: &str, child: &mut Value) {
    if CODE_OBJECTS.contains(&key) {
        redact_code_of(child);
    } else if CHANGE_LISTS.contains(&key)
        && let Value::Array(entries) = child
    {
        entries.iter_mut().for_each(redact_change);
    }
    walk(child);
}

/// One entry of a change list.
fn redact_change(entry: &mut Value) {
    let Value::Object(map) = entry else { return };
    redact_present(map.get_mut("code"));
    let property_is_code = map.get("property").and_then(Value::as_str) == Some("code");
    let updates_code = map.get("mutation_code").and_then(Value::as_str) == Some("updating_code");
    for side in ["from", "to"] {
        let Some(value) = map.get_mut(side) else { continue };
        let plain = !(value.is_object() || value.is_array());
        if property_is_code || (updates_code && plain) {
            redact_present(Some(value));
        }
    }
}

/// The `code` of `value`, when `value` is an object.
fn redact_code_of(value: &mut Value) {
    if let Value::Object(map) = value {
        redact_present(map.get_mut("code"));
    }
}

fn redact_present(value: Option<&mut Value>) {
    if let Some(value) = value
        && !value.is_null()
    {
        *value = Value::String(REDACTED.into());
    }
}

/// Seam's error answer as one line for logs and `last_error`: `type: message` from
/// `{"error": {"type", "message"}}`, each bounded and scrubbed (see `scrub`), never
/// the body itself (it may echo the code, PIN included); an answer without Seam's
/// error object is described by its size only.
pub fn seam_error_text(body: &[u8]) -> String {
    let error = serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("error").cloned());
    match error {
        Some(error) if error.is_object() => {
            let kind = error.get("type").and_then(Value::as_str).unwrap_or("error");
            let message = error.get("message").and_then(Value::as_str).unwrap_or("");
            format!("{}: {}", scrub(kind, MAX_TYPE_CHARS), scrub(message, MAX_MESSAGE_CHARS))
        }
        _ => format!("an answer without Seam's error object ({} bytes, not kept)", body.len()),
    }
}

/// A text from Seam made safe to store and log: every standalone run of four or
/// more digits (a possible PIN; not one inside a uuid or a date, i.e. next to a hex
/// digit or `-`) replaced by `REDACTED`, control characters by spaces, then cut to
/// `max_chars` characters.
pub fn scrub(text: &str, max_chars: usize) -> String {
    let chars: Vec<char> = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let joins = |c: Option<&char>| c.is_some_and(|c| c.is_ascii_hexdigit() || *c == '-');
    let mut scrubbed = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let run = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if run == 0 {
            scrubbed.push(chars[i]);
            i += 1;
            continue;
        }
        let standalone = !joins(i.checked_sub(1).and_then(|j| chars.get(j))) && !joins(chars.get(i + run));
        if run >= MIN_PIN_DIGITS && standalone {
            scrubbed.push_str(REDACTED);
        } else {
            scrubbed.extend(&chars[i..i + run]);
        }
        i += run;
    }
    bounded(&scrubbed, max_chars)
}

/// `text` cut to `max_chars` characters (with `…` when cut), control characters as
/// spaces: for ids and other texts that are not PINs but must not grow a log line
/// without bound.
pub fn bounded(text: &str, max_chars: usize) -> String {
    let clean = |s: &str| s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>();
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", clean(&text[..cut])),
        None => clean(text),
    }
}

/// A JSON error without the value it quotes (serde's own text does: `invalid type:
/// integer `905531``): its category and, when it has one, its position.
pub fn describe_json_error(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        Category::Io => "could not be read",
        Category::Syntax => "is not valid JSON",
        Category::Data => "has a field missing or of the wrong type",
        Category::Eof => "is truncated JSON",
    };
    match e.line() {
        0 => what.to_owned(),
        line => format!("{what} (line {line}, column {})", e.column()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redacted(mut value: Value) -> Value {
        redact_pin(&mut value);
        value
    }

    #[test]
    fn the_top_level_code_of_an_event_or_access_code() {
        let event = json!({"event_type": "access_code.set_on_device", "access_code_id": "ac_1", "code": "1234"});
        assert_eq!(redacted(event)["code"], REDACTED);
        assert_eq!(redacted(json!({"code": 905531}))["code"], REDACTED, "a PIN sent as a number");
        assert_eq!(redacted(json!({"code": null}))["code"], Value::Null, "null is no PIN");
        assert_eq!(redacted(json!({"status": "set"})), json!({"status": "set"}), "no code, nothing added");
    }

    #[test]
    fn code_changed_from_and_to() {
        let event = json!({
            "event_type": "access_code.code_changed", "access_code_id": "ac_1",
            "description": "changed", "from": {"code": "4821"}, "to": {"code": "9911"}
        });
        let expected = json!({
            "event_type": "access_code.code_changed", "access_code_id": "ac_1",
            "description": "changed", "from": {"code": REDACTED}, "to": {"code": REDACTED}
        });
        assert_eq!(redacted(event), expected);
        let cleared = json!({"event_type": "access_code.code_changed", "from": {"code": "4821"}, "to": {"code": null}});
        assert_eq!(redacted(cleared)["to"]["code"], Value::Null);
    }

    #[test]
    fn changed_properties_whose_property_is_code() {
        let event = json!({
            "event_type": "access_code.changed", "access_code_id": "ac_1", "change_reason": "renewed",
            "changed_properties": [
                {"property": "code", "from": "4821", "to": "9911"},
                {"property": "code", "from": null, "to": 9911},
                {"property": "code", "from": {"value": "4821"}, "to": ["9911"]},
                {"property": "name", "from": "Guest 4821", "to": "Guest 9911"},
                {"property": "ends_at", "from": "2026-11-25T10:00:00Z", "to": null}
            ]
        });
        let expected = json!({
            "event_type": "access_code.changed", "access_code_id": "ac_1", "change_reason": "renewed",
            "changed_properties": [
                {"property": "code", "from": REDACTED, "to": REDACTED},
                {"property": "code", "from": null, "to": REDACTED},
                {"property": "code", "from": REDACTED, "to": REDACTED},
                {"property": "name", "from": "Guest 4821", "to": "Guest 9911"},
                {"property": "ends_at", "from": "2026-11-25T10:00:00Z", "to": null}
            ]
        });
        assert_eq!(redacted(event), expected);
    }

    #[test]
    fn requested_mutations_from_and_to() {
        let event = json!({
            "event_type": "access_code.mutations_requested", "access_code_id": "ac_1",
            "requested_mutations": [
                {"mutation_code": "updating_code", "from": {"code": "4821"}, "to": {"code": 9911}},
                {"mutation_code": "updating_code", "from": "4821", "to": "9911"},
                {"mutation_code": "updating_name", "from": {"name": "A"}, "to": {"name": "B"}},
                {"mutation_code": "updating_time_frame", "from": {"starts_at": null}, "to": {"starts_at": "2026-11-25T10:00:00Z"}},
                {"mutation_code": "deleting"},
                {"mutation_code": "some_future_mutation", "code": "4821"}
            ]
        });
        let expected = json!({
            "event_type": "access_code.mutations_requested", "access_code_id": "ac_1",
            "requested_mutations": [
                {"mutation_code": "updating_code", "from": {"code": REDACTED}, "to": {"code": REDACTED}},
                {"mutation_code": "updating_code", "from": REDACTED, "to": REDACTED},
                {"mutation_code": "updating_name", "from": {"name": "A"}, "to": {"name": "B"}},
                {"mutation_code": "updating_time_frame", "from": {"starts_at": null}, "to": {"starts_at": "2026-11-25T10:00:00Z"}},
                {"mutation_code": "deleting"},
                {"mutation_code": "some_future_mutation", "code": REDACTED}
            ]
        });
        assert_eq!(redacted(event), expected);
    }

    #[test]
    fn pending_mutations_of_an_access_code_and_every_other_id_and_code_kept() {
        let code = json!({
            "access_code_id": "ac_1", "device_id": "d1", "code": "4821", "name": "Guest", "status": "setting",
            "errors": [{"error_code": "failed_to_set_on_device", "message": "m", "is_access_code_error": true}],
            "warnings": [{"warning_code": "delay_in_setting_on_device", "message": "m"}],
            "pending_mutations": [
                {"mutation_code": "updating_code", "created_at": "2026-11-25T10:00:00Z", "message": "m",
                 "from": {"code": "4821"}, "to": {"code": "9911"}},
                {"mutation_code": "creating", "created_at": "2026-11-25T10:00:00Z", "message": "m"}
            ],
            "pulled_backup_access_code_id": "ac_2"
        });
        let mut expected = code.clone();
        expected["code"] = json!(REDACTED);
        expected["pending_mutations"][0]["from"]["code"] = json!(REDACTED);
        expected["pending_mutations"][0]["to"]["code"] = json!(REDACTED);
        assert_eq!(redacted(code), expected);
    }

    #[test]
    fn access_codes_nested_anywhere() {
        let event = json!({
            "event_type": "access_code.some_future_type", "access_code_id": "ac_1",
            "access_code": {"access_code_id": "ac_1", "code": "1111",
                            "pending_mutations": [{"mutation_code": "updating_code", "from": {"code": "2222"}, "to": {"code": "3333"}}]},
            "backup_access_code": {"code": "4444"},
            "related": {"codes": [{"access_code_id": "ac_3", "code": "5555"}]},
            "deep": [[{"from": {"code": "6666"}}]]
        });
        let text = redacted(event).to_string();
        for pin in ["1111", "2222", "3333", "4444", "5555", "6666"] {
            assert!(!text.contains(pin), "{pin} in {text}");
        }
        assert!(text.contains(r#""access_code_id":"ac_3""#), "{text}");
    }

    #[test]
    fn a_code_key_outside_access_codes_and_changes_is_kept() {
        // `error_code`, `warning_code`, `mutation_code` are not PINs; nor is a `code`
        // in an object that is not an access code or a change of one.
        let event = json!({
            "event_type": "device.something", "device_id": "d1",
            "device_errors": [{"error_code": "device_offline", "details": {"code": "E42"}}],
            "mutation_code": "updating_code"
        });
        assert_eq!(redacted(event.clone()), event);
    }

    #[test]
    fn seam_errors_keep_type_and_scrubbed_message_only() {
        let echo = br#"{"error":{"type":"invalid_input","message":"code 905531 is invalid","data":{"code":"905531"}},"ok":false}"#;
        assert_eq!(seam_error_text(echo), "invalid_input: code [redacted] is invalid");
        let quoted = br#"{"error":{"type":"invalid_input","message":"Expected string, received \"code\":905531."}}"#;
        assert!(!seam_error_text(quoted).contains("905531"), "{}", seam_error_text(quoted));
        assert_eq!(
            seam_error_text(br#"{"error":{"type":"unauthorized","message":"Unauthorized"},"ok":false}"#),
            "unauthorized: Unauthorized"
        );
        for raw in [&b"<html>PIN 905531</html>"[..], b"905531", br#"{"error":"905531"}"#, b""] {
            let text = seam_error_text(raw);
            assert!(!text.contains("905531") && text.contains("bytes, not kept"), "{text}");
        }
        let long = format!(r#"{{"error":{{"type":"{}","message":"{}"}}}}"#, "t".repeat(500), "m".repeat(5000));
        let text = seam_error_text(long.as_bytes());
        assert!(text.chars().count() <= MAX_TYPE_CHARS + MAX_MESSAGE_CHARS + 4, "{} chars", text.chars().count());
    }

    #[test]
    fn scrubbing_replaces_standalone_digit_runs_and_keeps_ids_and_dates() {
        let cases = [
            ("PIN 1234.", "PIN [redacted]."),
            ("\"code\":905531,", "\"code\":[redacted],"),
            ("code_12345678", "code_[redacted]"),
            ("PIN905531 set", "PIN[redacted] set"),
            ("123 and 12", "123 and 12"),
            (
                "id 7b6c2a4e-0000-4000-8000-000000000001 at 2026-11-25T10:00:00Z",
                "id 7b6c2a4e-0000-4000-8000-000000000001 at 2026-11-25T10:00:00Z",
            ),
            ("access_code1 ac12345", "access_code1 ac12345"),
            ("line\nbreak\t1234", "line break [redacted]"),
        ];
        for (text, expected) in cases {
            assert_eq!(scrub(text, 200), expected, "{text}");
        }
        assert_eq!(scrub("abcdef", 3), "abc…");
        assert_eq!(scrub("é".repeat(300).as_str(), 200).chars().count(), 201);
    }

    #[test]
    fn json_errors_are_described_without_the_value_they_quote() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Code {
            code: Option<String>,
        }
        let e = serde_json::from_slice::<Code>(br#"{"code": 905531}"#).unwrap_err();
        assert!(e.to_string().contains("905531"), "serde's own text quotes the PIN: {e}");
        assert_eq!(describe_json_error(&e), "has a field missing or of the wrong type (line 1, column 15)");
        let e = serde_json::from_value::<Code>(json!({"code": 905531})).unwrap_err();
        assert_eq!(describe_json_error(&e), "has a field missing or of the wrong type");
        let e = serde_json::from_slice::<Value>(b"{\"code\": 9055x31}").unwrap_err();
        assert_eq!(describe_json_error(&e), "is not valid JSON (line 1, column 14)");
        let e = serde_json::from_slice::<Value>(b"{\"code\": \"9055").unwrap_err();
        assert!(describe_json_error(&e).starts_with("is truncated JSON"), "{}", describe_json_error(&e));
    }
}
