//! Keeping PINs out of what the service stores and logs.
//!
//! Seam sends an access code's PIN in many places: the top-level `code` of an event
//! or an access-code object, `from.code` / `to.code` of `access_code.code_changed`,
//! `changed_properties[{property: "code", from, to}]` of `access_code.changed`,
//! `requested_mutations[].from` / `.to` of `access_code.mutations_requested`, and
//! `pending_mutations[].from` / `.to` (`updating_code`) of the access-code object.
//! `redact_pin` is the one function that removes them from JSON before it is stored
//! (`seam_events.payload`, `access_codes.access_code`).

use serde_json::Value;

/// What replaces a PIN in anything stored, unless the user opted in to keeping PINs.
pub const REDACTED: &str = "[redacted]";

/// Lists whose entries each describe a change of an access code: a pending or
/// requested mutation, or a changed property.
const CHANGE_LISTS: [&str; 3] = ["pending_mutations", "requested_mutations", "changed_properties"];

/// Keys whose object value is an access code, or a version of one.
const CODE_OBJECTS: [&str; 4] = ["from", "to", "access_code", "backup_access_code"];

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
    redact_code_of(value);
    walk(value);
}

fn walk(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(walk),
        Value::Object(map) => {
            if map.contains_key("access_code_id") {
                redact_present(map.get_mut("code"));
            }
            for (key, child) in map.iter_mut() {
                if CODE_OBJECTS.contains(&key.as_str()) {
                    redact_code_of(child);
                } else if CHANGE_LISTS.contains(&key.as_str())
                    && let Value::Array(entries) = child
                {
                    entries.iter_mut().for_each(redact_change);
                }
                walk(child);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
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
}
